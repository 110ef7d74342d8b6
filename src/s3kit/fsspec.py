"""An fsspec filesystem over a Multiplexer: ``s3kit://bucket/key`` for pandas, pyarrow and Dask.

Install with ``pip install "s3kit[fsspec]"``; importing this module registers the protocol
``s3kit`` (the package also declares it as an ``fsspec.specs`` entry point)::

    import pandas as pd
    df = pd.read_csv("s3kit://bucket/data.csv", storage_options={"config": "s3kit.toml"})

Storage options: ``config=`` a TOML file (see docs/configuration.md; default: ``$S3KIT_CONFIG``,
then ``./s3kit.toml``), or ``multiplexer=`` a live :class:`~s3kit.Multiplexer`. The filesystem
pickles as a reference to its configuration file, never as a live multiplexer or a secret: each
process (each Dask worker) reads the file and builds its own multiplexer.

Routing: every call is routed by the configuration's strategy. Reads assume the endpoints hold the
same data (replicas), so a read goes to any endpoint and fails over to the next. A write (``open``
in ``"wb"``, ``pipe``, ``put``, ``cp_file``) goes to one endpoint, where the strategy sends it; the
filesystem instance remembers that endpoint and reads the object back from it first. A delete
goes to every endpoint (otherwise a replica would bring the object back) and raises ``OSError``
when some endpoint could not be reached. There are no directories: they are key prefixes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from glob import has_magic  # as fsspec's own expand_path
from typing import IO, Any

import fsspec  # type: ignore[import-untyped, import-not-found, unused-ignore]
from fsspec.spec import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    AbstractBufferedFile,
    AbstractFileSystem,
    make_instance,
)
from fsspec.utils import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    stringify_path,
)

from ._configfile import find_config, multiplexer_from_config
from ._errors import AccessDenied, EndpointError, NoHealthyEndpoint, NotFound, ServiceError
from ._mux import Multiplexer

__all__ = ["PROTOCOL", "S3KitFile", "S3KitFileSystem"]

PROTOCOL = "s3kit"

# Writes smaller than this are one PutObject; larger ones are spilled to a temporary file and sent
# with upload_file (multipart from 8 MiB), which a failover can resend from the start.
_PUT_LIMIT = 8 * 2**20
# fsspec's own options, which it passes to every filesystem (the listings cache, async settings).
_FSSPEC_OPTIONS = frozenset(
    {"use_listings_cache", "listings_expiry_time", "max_paths", "asynchronous", "loop"}
)
# How many written keys an instance remembers the endpoint of (oldest forgotten first).
_REMEMBERED = 10_000


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


@contextlib.contextmanager
def _oserrors(path: str) -> Iterator[None]:
    """s3kit errors as the OSErrors fsspec callers expect; the s3kit error is the ``__cause__``."""
    try:
        yield
    except NotFound as exc:
        raise _not_found(path) from exc
    except AccessDenied as exc:
        raise PermissionError(errno.EACCES, str(exc), path) from exc
    except (EndpointError, NoHealthyEndpoint) as exc:
        raise OSError(errno.EIO, str(exc), path) from exc


class _Meta(type(AbstractFileSystem)):  # type: ignore[misc]
    """fsspec caches instances by the ``str()`` of their options; a live multiplexer is not a
    value (two different ones can print alike), so an instance built on one is never cached."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("multiplexer") is not None:
            kwargs.setdefault("skip_instance_cache", True)
        return super().__call__(*args, **kwargs)


class S3KitFileSystem(AbstractFileSystem, metaclass=_Meta):  # type: ignore[misc]
    """fsspec filesystem ``s3kit://bucket/key`` over a :class:`~s3kit.Multiplexer`.

    ``config``: path of a TOML configuration file (default ``$S3KIT_CONFIG``, then
    ``./s3kit.toml``). ``multiplexer``: use this multiplexer instead of building one (then the
    filesystem can only be pickled if ``config`` is given too). ``default_block_size``: the
    read block and write buffer of ``open`` (5 MiB). Other options are fsspec's
    (``use_listings_cache``, ``listings_expiry_time``, ``skip_instance_cache``); any other
    option raises ``TypeError`` (credentials belong in the configuration file).
    """

    protocol = PROTOCOL
    root_marker = ""

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        multiplexer: Multiplexer | None = None,
        **storage_options: Any,
    ) -> None:
        if self._cached:
            return  # an instance reused from fsspec's cache is already set up
        unknown = sorted(set(storage_options) - _FSSPEC_OPTIONS - {"default_block_size"})
        if unknown:
            raise TypeError(
                f"unknown s3kit storage option{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}: expected config= (an s3kit TOML file), "
                f"multiplexer=, default_block_size= or one of fsspec's ("
                f"{', '.join(sorted(_FSSPEC_OPTIONS))}); credentials belong in the config file"
            )
        self.default_block_size: int | None = storage_options.pop("default_block_size", None)
        super().__init__(**storage_options)
        if multiplexer is not None and not isinstance(multiplexer, Multiplexer):
            raise TypeError(
                f"multiplexer= must be an s3kit.Multiplexer, not {type(multiplexer).__name__}"
            )
        self._config_path: str | None = None
        if multiplexer is None or config is not None:
            self._config_path = os.path.abspath(find_config(config))
        if multiplexer is None:
            assert self._config_path is not None
            multiplexer = multiplexer_from_config(self._config_path)
        self._mux: Multiplexer = multiplexer
        self._written: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._written_lock = threading.Lock()

    # ------------------------------------------------------------------ pickling
    def __reduce__(self) -> tuple[Any, ...]:
        if self._config_path is None:
            raise TypeError(
                "an S3KitFileSystem built with multiplexer= and no config= cannot be pickled "
                "(a Multiplexer holds live connections and credentials); pass config= (the "
                "path of an s3kit TOML file) so each process builds its own multiplexer"
            )
        options = {
            k: v for k, v in self.storage_options.items() if k not in ("config", "multiplexer")
        }
        options["config"] = self._config_path
        return make_instance, (type(self), (), options)

    # --------------------------------------------------------------------- paths
    @property
    def multiplexer(self) -> Multiplexer:
        """The multiplexer every call goes through."""
        return self._mux

    @property
    def config_path(self) -> str | None:
        """The absolute path of the configuration file, or None (``multiplexer=`` only)."""
        return self._config_path

    @property
    def fsid(self) -> str:
        return f"s3kit:{self._config_path or id(self._mux)}"

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text: str = stringify_path(path)
        for prefix in (f"{PROTOCOL}://", f"{PROTOCOL}::"):
            if text.startswith(prefix):
                text = text[len(prefix) :]
                break
        return text.strip("/")

    def split_path(self, path: str) -> tuple[str, str]:
        """``"bucket/a/b"`` → ``("bucket", "a/b")``; the key is ``""`` for a bucket or the root."""
        bucket, _, key = self._strip_protocol(path).partition("/")
        return bucket, key

    def _file_parts(self, path: str) -> tuple[str, str]:
        bucket, key = self.split_path(path)
        if not bucket or not key:
            raise IsADirectoryError(errno.EISDIR, "a bucket is not a file", path)
        return bucket, key

    # ---------------------------------------------------- endpoint of a write
    def _remember(self, bucket: str, key: str, result: dict[str, Any]) -> None:
        name = result.get("Endpoint")
        if not isinstance(name, str):
            return
        with self._written_lock:
            self._written[bucket, key] = name
            self._written.move_to_end((bucket, key))
            while len(self._written) > _REMEMBERED:
                self._written.popitem(last=False)

    def _forget(self, bucket: str, key: str) -> None:
        with self._written_lock:
            self._written.pop((bucket, key), None)

    def written_endpoint(self, path: str) -> str | None:
        """The endpoint this instance wrote ``path`` to, if it did (reads ask it first)."""
        bucket, key = self.split_path(path)
        with self._written_lock:
            return self._written.get((bucket, key))

    def _read(
        self, verb: Callable[..., dict[str, Any]], bucket: str, key: str, **kwargs: Any
    ) -> dict[str, Any]:
        """A read, from the endpoint this instance wrote the object to first, else routed."""
        with self._written_lock:
            pinned = self._written.get((bucket, key))
        if pinned is not None and pinned in self._mux.endpoints:
            try:
                return verb(bucket, key, endpoint=pinned, **kwargs)
            except EndpointError:
                pass  # unreachable there, or replaced since: any replica may answer
        return verb(bucket, key, **kwargs)

    # ------------------------------------------------------------------- listing
    @staticmethod
    def _object_info(bucket: str, key: str, meta: dict[str, Any]) -> dict[str, Any]:
        size = meta.get("Size", meta.get("ContentLength", 0))
        info: dict[str, Any] = {
            "name": f"{bucket}/{key}",
            "size": int(size or 0),
            "type": "file",
            "StorageClass": meta.get("StorageClass", "STANDARD"),
        }
        if meta.get("ETag") is not None:
            info["ETag"] = meta["ETag"]
        if meta.get("LastModified") is not None:
            info["LastModified"] = meta["LastModified"]
            info["mtime"] = meta["LastModified"]
        if meta.get("ContentType") is not None:
            info["ContentType"] = meta["ContentType"]
        return info

    @staticmethod
    def _dir_info(name: str) -> dict[str, Any]:
        return {"name": name, "size": 0, "type": "directory", "StorageClass": "DIRECTORY"}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """Entries under ``path`` (one level: deeper keys show as directories).

        ``refresh=True`` ignores the listing cache. A file's path lists the file itself.
        """
        path = self._strip_protocol(path)
        refresh = bool(kwargs.pop("refresh", False))
        cached = None if refresh else self.dircache.get(path)
        entries: list[dict[str, Any]] = self._list(path) if cached is None else cached
        return entries if detail else [e["name"] for e in entries]

    def _list(self, path: str) -> list[dict[str, Any]]:
        bucket, key = self.split_path(path)
        if not bucket:
            with _oserrors(path):
                resp = self._mux.list_buckets()
            entries = [self._dir_info(b["Name"]) for b in resp.get("Buckets") or []]
            self.dircache[""] = entries
            return entries
        prefix = f"{key}/" if key else ""
        with _oserrors(path):
            resp = self._mux.list_objects(bucket, prefix or None, delimiter="/")
        entries = [
            self._dir_info(f"{bucket}/{cp['Prefix'].rstrip('/')}")
            for cp in resp.get("CommonPrefixes") or []
        ]
        marker = False
        for obj in resp.get("Contents") or []:
            if obj["Key"] == prefix:
                marker = True  # a "directory marker" object: the directory itself
                continue
            entries.append(self._object_info(bucket, obj["Key"], obj))
        entries.sort(key=lambda e: str(e["name"]))
        if entries or not key or marker:
            self.dircache[path] = entries
            return entries
        try:
            return [self._head(path, bucket, key)]  # ls of a file lists the file
        except FileNotFoundError:
            raise _not_found(path) from None

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every file under ``path`` (with ``withdirs``, the directories too, those stored as a
        "directory marker" object ``dir/`` with ``"marker": True`` in their details), sorted.

        One flat listing of the prefix, fetched a page at a time (``iter_objects``), instead of
        one listing per directory level; with ``maxdepth``, or at the root, fsspec's own walk.
        A path that names a file finds the file; a missing one finds nothing.
        """
        path = self._strip_protocol(path)
        bucket, key = self.split_path(path)
        if maxdepth is not None or not bucket:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        prefix = f"{key}/" if key else ""
        out: dict[str, dict[str, Any]] = {}
        dirs: set[str] = set()  # below path, each with its parents
        markers: set[str] = set()  # directories with a "directory marker" object
        listed = False

        def add_dir(name: str) -> None:
            """The directory ``name`` and those above it, up to (not including) ``path``."""
            while len(name) > len(key) and f"{bucket}/{name}" not in dirs:
                dirs.add(f"{bucket}/{name}")
                name = name.rpartition("/")[0]

        try:
            with _oserrors(path):
                for obj in self._mux.iter_objects(bucket, prefix or None):
                    listed = True
                    name = obj["Key"]
                    if name.endswith("/"):  # a "directory marker" object: a directory
                        if withdirs:
                            add_dir(name.rstrip("/"))
                            markers.add(f"{bucket}/{name.rstrip('/')}")
                        continue
                    if withdirs:
                        add_dir(name.rpartition("/")[0])
                    out[f"{bucket}/{name}"] = self._object_info(bucket, name, obj)
        except FileNotFoundError:
            return {} if detail else []  # no such bucket (as fsspec's walk: nothing found)
        if withdirs:
            for name in dirs:
                out.setdefault(name, self._dir_info(name))
            if listed or not key:
                out[path] = self._dir_info(path)  # the directory itself, as fsspec does
            for name in markers & out.keys():
                out[name]["marker"] = True
        if not out and key:
            with contextlib.suppress(FileNotFoundError):
                out[path] = self._head(path, bucket, key)
        names = sorted(out)
        return {name: out[name] for name in names} if detail else names

    def _head(self, path: str, bucket: str, key: str) -> dict[str, Any]:
        with _oserrors(path):
            resp = self._read(self._mux.head_object, bucket, key)
        return self._object_info(bucket, key, resp)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """A file's size, ETag and LastModified (HeadObject), or a directory (a key prefix)."""
        path = self._strip_protocol(path)
        bucket, key = self.split_path(path)
        if not bucket:
            return self._dir_info("")
        if not kwargs.pop("refresh", False):
            cached = self._ls_from_cache(path)  # raises when the listed parent lacks it
            if cached is not None:
                for entry in cached:
                    if entry["name"] == path:
                        return dict(entry)
                return self._dir_info(path)
        if not key:
            with _oserrors(path):
                self._mux.list_objects(bucket, max_keys=1)  # NoSuchBucket → FileNotFoundError
            return self._dir_info(bucket)
        try:
            return self._head(path, bucket, key)
        except FileNotFoundError:
            pass
        with _oserrors(path):
            resp = self._mux.list_objects(bucket, f"{key}/", max_keys=1, delimiter="/")
        if resp.get("Contents") or resp.get("CommonPrefixes"):
            return self._dir_info(path)
        raise _not_found(path)

    def exists(self, path: str, **kwargs: Any) -> bool:
        """Whether ``path`` is a file or a directory. An unreachable store raises, not False."""
        try:
            self.info(path, **kwargs)
        except (FileNotFoundError, ValueError):
            return False
        return True

    def modified(self, path: str) -> Any:
        info = self.info(path)
        if "LastModified" not in info:
            raise IsADirectoryError(errno.EISDIR, "a directory has no modification time", path)
        return info["LastModified"]

    def ukey(self, path: str) -> str:
        return str(self.info(path).get("ETag") or super().ukey(path))

    def invalidate_cache(self, path: str | None = None) -> None:
        if path is None:
            self.dircache.clear()
        else:
            path = self._strip_protocol(path)
            self.dircache.pop(path, None)
            while path:
                path = self._parent(path)
                self.dircache.pop(path, None)
        super().invalidate_cache(path)

    # --------------------------------------------------------------- directories
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Directories are key prefixes: nothing to create. ``create_bucket=True`` creates the
        path's bucket on every endpoint."""
        if kwargs.pop("create_bucket", False):
            bucket, _ = self.split_path(path)
            with _oserrors(path):
                self._mux.create_bucket(bucket)
            self.invalidate_cache("")

    def makedirs(self, path: str, exist_ok: bool = False, **kwargs: Any) -> None:
        self.mkdir(path, create_parents=True, **kwargs)

    def rmdir(self, path: str) -> None:
        """Nothing to remove: a directory disappears with its last key. Buckets are kept."""

    # --------------------------------------------------------------------- bytes
    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """The object's bytes, or ``[start:end]`` of them (Python slice rules) by a ranged GET."""
        path = self._strip_protocol(path)
        bucket, key = self._file_parts(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            if end is None and start is not None:
                return self._get(path, bucket, key, f"bytes=-{-start}")
            size = int(self.info(path)["size"])
            start, end = slice(start, end).indices(size)[:2]
        start = start or 0
        if end is None:
            return self._get(path, bucket, key, f"bytes={start}-" if start else None)
        if end <= start:
            return b""
        return self._get(path, bucket, key, f"bytes={start}-{end - 1}")

    def _get(self, path: str, bucket: str, key: str, range: str | None) -> bytes:
        try:
            with _oserrors(path):
                resp = self._read(self._mux.get_object, bucket, key, range=range)
        except OSError as exc:
            cause = exc.__cause__
            if isinstance(cause, ServiceError) and cause.status == 416:
                return b""  # a range starting at or past the end
            raise
        return bytes(resp["Body"])

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Write ``value`` as one object (PutObject; multipart upload from 8 MiB)."""
        path = self._strip_protocol(path)
        bucket, key = self._file_parts(path)
        if mode == "create" and self.exists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        data = bytes(value)
        if len(data) < _PUT_LIMIT:
            self._put(path, bucket, key, data)
        else:
            spill = _spill_file()
            try:
                with spill:
                    spill.write(data)
                self._upload(path, bucket, key, spill.name)
            finally:
                _remove(spill.name)

    def _put(self, path: str, bucket: str, key: str, data: bytes) -> None:
        with _oserrors(path):
            result = self._mux.put_object(bucket, key, data)
        self._remember(bucket, key, result)
        self.invalidate_cache(path)

    def _upload(self, path: str, bucket: str, key: str, local: str, **kwargs: Any) -> None:
        with _oserrors(path):
            result = self._mux.upload_file(local, bucket, key, **kwargs)
        self._remember(bucket, key, result)
        self.invalidate_cache(path)

    def put_file(self, lpath: str, rpath: str, callback: Any = None, **kwargs: Any) -> None:
        """Upload a local file (multipart from 8 MiB, resent from the file on failover)."""
        if os.path.isdir(lpath):
            return  # directories are key prefixes
        rpath = self._strip_protocol(rpath)
        bucket, key = self._file_parts(rpath)
        if kwargs.get("mode") == "create" and self.exists(rpath):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), rpath)
        progress = None
        if callback is not None and hasattr(callback, "relative_update"):
            callback.set_size(os.path.getsize(lpath))
            progress = callback.relative_update
        self._upload(rpath, bucket, key, os.fspath(lpath), callback=progress)

    def get_file(
        self, rpath: str, lpath: str, callback: Any = None, outfile: Any = None, **kwargs: Any
    ) -> None:
        """Download to a local file (atomically: a temporary file renamed into place)."""
        if outfile is not None or isinstance(lpath, (bytes, bytearray)):
            return super().get_file(  # type: ignore[no-any-return]
                rpath, lpath, callback=callback, outfile=outfile, **kwargs
            )
        rpath = self._strip_protocol(rpath)
        if self.isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        bucket, key = self._file_parts(rpath)
        progress = None
        if callback is not None and hasattr(callback, "relative_update"):
            progress = callback.relative_update
        with _oserrors(rpath):
            self._read(self._mux.download_file, bucket, key, file_path=lpath, callback=progress)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Server-side copy (CopyObject) on the endpoint that holds the source.

        That is the endpoint this instance wrote the source to, else the strategy's pick; the
        copy is not failed over (CopyObject is limited to 5 GiB by S3).
        """
        path1, path2 = self._strip_protocol(path1), self._strip_protocol(path2)
        bucket1, key1 = self._file_parts(path1)
        bucket2, key2 = self._file_parts(path2)
        with self._written_lock:
            pinned = self._written.get((bucket1, key1))
        if pinned is not None and pinned not in self._mux.endpoints:
            pinned = None
        with _oserrors(path1):
            result = self._mux.copy_object(bucket2, key2, bucket1, key1, endpoint=pinned)
        self._remember(bucket2, key2, result)
        self.invalidate_cache(path2)

    def rm_file(self, path: str) -> None:
        """Delete one object on every endpoint (a delete of a missing key succeeds).

        Raises ``OSError`` naming the endpoints it could not delete on: a replica that kept the
        object would serve it again.
        """
        path = self._strip_protocol(path)
        bucket, key = self._file_parts(path)
        failed: list[tuple[str, BaseException]] = []
        for name in list(self._mux.endpoints):
            try:
                self._mux.delete_object(bucket, key, endpoint=name)
            except NotFound:
                pass  # that endpoint has no such bucket: nothing to delete there
            except EndpointError as exc:
                failed.append((name, exc))
        self._forget(bucket, key)
        self.invalidate_cache(path)
        if failed:
            detail = ", ".join(f"{name} ({type(exc).__name__})" for name, exc in failed)
            raise OSError(
                errno.EIO, f"not deleted on every endpoint: failed on {detail}", path
            ) from failed[-1][1]

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete files; with ``recursive=True`` every key under a prefix, the "directory
        marker" objects (``dir/``) of the prefix and its subdirectories too. Buckets are kept.

        Several files are deleted with DeleteObjects, 1000 keys a request, on every endpoint.
        Raises ``OSError`` naming the endpoints (and keys) that were not deleted, once every
        endpoint was asked.
        """
        markers: list[str] = []
        if recursive and maxdepth is None and isinstance(path, str) and not has_magic(path):
            found = self.find(path, withdirs=True, detail=True)  # what expand_path would list
            if not found:
                raise _not_found(path)
            paths = list(found)
            markers = [name for name, info in found.items() if info.get("marker")]
        else:
            paths = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        files = self._files_among(paths)
        if len(files) == 1 and not markers:
            self.rm_file(files[0])
            return
        by_bucket: dict[str, list[str]] = {}
        for p in files:
            bucket, key = self.split_path(p)
            by_bucket.setdefault(bucket, []).append(key)
        for p in markers:
            bucket, key = self.split_path(p)
            by_bucket.setdefault(bucket, []).append(f"{key}/")
        failures: list[str] = []
        cause: BaseException | None = None
        for bucket, keys in by_bucket.items():
            for name in list(self._mux.endpoints):
                try:
                    result = self._mux.delete_objects(bucket, keys, quiet=True, endpoint=name)
                except NotFound:
                    continue  # that endpoint has no such bucket: nothing to delete there
                except EndpointError as exc:
                    failures.append(f"{name} ({type(exc).__name__})")
                    cause = exc
                    continue
                for error in result.get("Errors") or []:
                    failures.append(
                        f"{name}: {bucket}/{error.get('Key')} ({error.get('Code') or 'Error'})"
                    )
        for p in files:
            self._forget(*self.split_path(p))
            self.invalidate_cache(p)
        if failures:
            shown = ", ".join(failures[:10]) + (
                f" and {len(failures) - 10} more" if len(failures) > 10 else ""
            )
            where = path if isinstance(path, str) else files[0]
            raise OSError(
                errno.EIO, f"not deleted on every endpoint: failed on {shown}", where
            ) from cause

    def cat(
        self, path: Any, recursive: bool = False, on_error: str = "raise", **kwargs: Any
    ) -> Any:
        """The bytes of one file, or ``{path: bytes}`` for a list, a glob or a whole prefix."""
        paths = self.expand_path(path, recursive=recursive)
        if (
            len(paths) == 1
            and not isinstance(path, list)
            and paths[0] == self._strip_protocol(path)
        ):
            return self.cat_file(paths[0], **kwargs)
        out: dict[str, Any] = {}
        for p in self._files_among(paths):
            try:
                out[p] = self.cat_file(p, **kwargs)
            except Exception as exc:
                if on_error == "raise":
                    raise
                if on_error == "return":
                    out[p] = exc
        return out

    def _files_among(self, paths: list[str]) -> list[str]:
        """``paths`` less buckets and key prefixes (the parents of others, or listed as such)."""
        parents: set[str] = set()
        for p in paths:
            while "/" in p:
                p = p.rsplit("/", 1)[0]
                if p in parents:
                    break
                parents.add(p)
        return [
            p
            for p in paths
            if self.split_path(p)[1] and p not in parents and not self._known_dir(p)
        ]

    def _known_dir(self, path: str) -> bool:
        try:
            listing = self.dircache[self._parent(path)]
        except KeyError:
            return False
        return any(e["name"] == path and e["type"] == "directory" for e in listing)

    def sign(self, path: str, expiration: int = 100, **kwargs: Any) -> str:
        """A presigned GET URL on the endpoint the strategy ranks first (no network call)."""
        bucket, key = self._file_parts(path)
        return self._mux.create_presigned_url(bucket, key, int(expiration))

    # --------------------------------------------------------------------- files
    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> S3KitFile:
        path = self._strip_protocol(path)
        self._file_parts(path)
        if mode == "ab":
            raise NotImplementedError("S3 objects cannot be appended to: write a new object")
        info = None
        if mode == "rb" and kwargs.get("size") is None:
            info = self.info(path)
            if info["type"] != "file":
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            kwargs["size"] = info["size"]
        if mode == "xb" and self.exists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        f = S3KitFile(
            self,
            path,
            mode,
            block_size=block_size or self.default_block_size or "default",
            autocommit=autocommit,
            cache_options=cache_options,
            **kwargs,
        )
        if info is not None:
            f.details = info
        return f


class S3KitFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file of an :class:`S3KitFileSystem`.

    Reading fetches byte ranges (ranged GETs, failed over like any read). Writing buffers one
    block (5 MiB by default) in memory; a file that outgrows it is spilled to a temporary file,
    which is uploaded on close (multipart from 8 MiB), so memory stays bounded and a failover can
    resend the whole object. A ``with`` block left by an exception uploads nothing.
    """

    fs: S3KitFileSystem

    def __init__(self, fs: S3KitFileSystem, path: str, mode: str = "rb", **kwargs: Any) -> None:
        self.bucket, self.key = fs._file_parts(path)
        self._spill: IO[bytes] | None = None
        self._pending: bytes | None = None  # a small file waiting for commit()
        super().__init__(fs, path, mode, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        fs = self.fs
        with _oserrors(self.path):
            resp = fs._read(
                fs.multiplexer.get_object, self.bucket, self.key, range=f"bytes={start}-{end - 1}"
            )
        return bytes(resp["Body"])

    def _initiate_upload(self) -> None:
        """Nothing to start: the object is sent whole on close."""

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        if final and self._spill is None:
            self._pending = data
        else:
            if self._spill is None:
                self._spill = _spill_file()
            self._spill.write(data)
            if final:
                self._spill.close()
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Send the written bytes (at close, or at the end of an fsspec transaction)."""
        fs = self.fs
        try:
            if self._spill is not None:
                fs._upload(self.path, self.bucket, self.key, self._spill.name)
            elif self._pending is not None:
                fs._put(self.path, self.bucket, self.key, self._pending)
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the written bytes without sending them."""
        spill, self._spill, self._pending = self._spill, None, None
        if spill is not None:
            spill.close()
            _remove(spill.name)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.autocommit and "r" not in self.mode:
                self.discard()  # an upload that failed leaves no temporary file behind

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None and self.writable():
            self.discard()
            self.forced = True  # nothing more to send: the with block failed
        self.close()


def _spill_file() -> IO[bytes]:
    return tempfile.NamedTemporaryFile(prefix="s3kit-fsspec-", delete=False)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


fsspec.register_implementation(PROTOCOL, "s3kit.fsspec.S3KitFileSystem", clobber=True)
