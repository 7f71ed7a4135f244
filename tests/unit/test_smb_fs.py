"""smbcore.fs: CREATE semantics, confinement to the share, delete-on-close, rename, listing
with Windows wildcards, positional I/O, read-only shares, errno translation."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smbcore import fileinfo as fi
from smbcore.fileinfo import AccessMask, FileAttributes, FileInfoClass
from smbcore.fileops import CreateAction, CreateDisposition, CreateOptions
from smbcore.fs import (
    ERRNO_STATUS,
    MAX_FILE_SIZE,
    MAX_STREAM_SIZE,
    STATUS_CANNOT_DELETE,
    STATUS_DISK_FULL,
    STATUS_MEDIA_WRITE_PROTECTED,
    STATUS_NOT_SAME_DEVICE,
    FsError,
    FsHandle,
    FsShare,
    compile_pattern,
    grant_access,
    split_smb_path,
    split_stream,
    status_of,
)
from smbcore.ntstatus import NTStatus

D = CreateDisposition
O = CreateOptions  # noqa: E741
A = CreateAction
READ = AccessMask.FILE_READ_DATA | AccessMask.FILE_READ_ATTRIBUTES
RW = READ | AccessMask.FILE_WRITE_DATA | AccessMask.FILE_WRITE_ATTRIBUTES
ALL = 0x001F01FF
DELETE = AccessMask.DELETE | AccessMask.FILE_READ_ATTRIBUTES


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "share"
    r.mkdir()
    (r / "file.txt").write_bytes(b"hello world")
    (r / "dir").mkdir()
    (r / "dir" / "inner.bin").write_bytes(b"\x00" * 10)
    return r


@pytest.fixture
def share(root: Path) -> Iterator[FsShare]:
    with FsShare(root) as s:
        yield s


def status(exc: pytest.ExceptionInfo[FsError]) -> int:
    return exc.value.status


def refused(fn: object, *args: object, **kwargs: object) -> int:
    with pytest.raises(FsError) as err:
        fn(*args, **kwargs)  # type: ignore[operator]
    return status(err)


# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "comps"),
    [
        ("", ()),
        ("file.txt", ("file.txt",)),
        ("dir\\inner.bin", ("dir", "inner.bin")),
        ("dir\\..\\file.txt", ("file.txt",)),
        (".\\dir\\.\\x", ("dir", "x")),
        ("dir\\", ("dir",)),
        ("file.txt::$DATA", ("file.txt",)),
        ("file.txt::$data", ("file.txt",)),
        ("ü ñ 日本", ("ü ñ 日本",)),
        ("a" * 255, ("a" * 255,)),
    ],
)
def test_split_smb_path(path: str, comps: tuple[str, ...]) -> None:
    assert split_smb_path(path) == comps


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("\\etc\\passwd", NTStatus.INVALID_PARAMETER),
        ("..\\..\\etc\\passwd", NTStatus.OBJECT_PATH_SYNTAX_BAD),
        ("dir\\..\\..\\x", NTStatus.OBJECT_PATH_SYNTAX_BAD),
        ("..", NTStatus.OBJECT_PATH_SYNTAX_BAD),
        ("/etc/passwd", NTStatus.OBJECT_NAME_INVALID),
        ("a/b", NTStatus.OBJECT_NAME_INVALID),
        ("C:\\x", NTStatus.OBJECT_NAME_INVALID),
        ("file.txt:stream", NTStatus.OBJECT_NAME_INVALID),
        ("file.txt:stream:$DATA", NTStatus.OBJECT_NAME_INVALID),
        ("dir::$DATA\\x", NTStatus.OBJECT_NAME_INVALID),
        ("a*b", NTStatus.OBJECT_NAME_INVALID),
        ("a?", NTStatus.OBJECT_NAME_INVALID),
        ('a"b', NTStatus.OBJECT_NAME_INVALID),
        ("a<b", NTStatus.OBJECT_NAME_INVALID),
        ("a>b", NTStatus.OBJECT_NAME_INVALID),
        ("a|b", NTStatus.OBJECT_NAME_INVALID),
        ("a\x00b", NTStatus.OBJECT_NAME_INVALID),
        ("a\x1fb", NTStatus.OBJECT_NAME_INVALID),
        ("dir\\\\x", NTStatus.OBJECT_NAME_INVALID),
        ("a" * 256, NTStatus.OBJECT_NAME_INVALID),
        ("é" * 128, NTStatus.OBJECT_NAME_INVALID),  # 256 bytes of UTF-8
        ("bad\ud800", NTStatus.OBJECT_NAME_INVALID),
        ("x\\" * 20000, NTStatus.OBJECT_NAME_INVALID),
    ],
)
def test_split_smb_path_refusals(path: str, expected: int) -> None:
    assert refused(split_smb_path, path) == expected


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from(["a", "b", ".", "..", "\\", ":", "*", "$DATA", "\x01", "é"]), max_size=30).map(
        "".join
    )
)
def test_split_smb_path_property(path: str) -> None:
    try:
        comps = split_smb_path(path)
    except FsError as exc:
        failed: int | None = exc.status
        comps = ()
    else:
        failed = None
    assert failed in (
        None,
        NTStatus.INVALID_PARAMETER,
        NTStatus.OBJECT_NAME_INVALID,
        NTStatus.OBJECT_PATH_SYNTAX_BAD,
    )
    for c in comps:
        assert c not in ("", ".", "..") and "\\" not in c and "/" not in c and ":" not in c


# -- CREATE dispositions ---------------------------------------------------------------------------

CONTENT = b"hello world"


@pytest.mark.parametrize(
    ("disposition", "exists", "outcome", "content"),
    [
        (D.SUPERSEDE, True, A.SUPERSEDED, b""),
        (D.SUPERSEDE, False, A.CREATED, b""),
        (D.OPEN, True, A.OPENED, CONTENT),
        (D.OPEN, False, NTStatus.OBJECT_NAME_NOT_FOUND, None),
        (D.CREATE, True, NTStatus.OBJECT_NAME_COLLISION, CONTENT),
        (D.CREATE, False, A.CREATED, b""),
        (D.OPEN_IF, True, A.OPENED, CONTENT),
        (D.OPEN_IF, False, A.CREATED, b""),
        (D.OVERWRITE, True, A.OVERWRITTEN, b""),
        (D.OVERWRITE, False, NTStatus.OBJECT_NAME_NOT_FOUND, None),
        (D.OVERWRITE_IF, True, A.OVERWRITTEN, b""),
        (D.OVERWRITE_IF, False, A.CREATED, b""),
    ],
)
def test_dispositions(
    share: FsShare, root: Path, disposition: int, exists: bool, outcome: int, content: bytes | None
) -> None:
    name = "file.txt" if exists else "new.txt"
    if outcome in (A.SUPERSEDED, A.OPENED, A.CREATED, A.OVERWRITTEN) and isinstance(outcome, A):
        with share.open(name, disposition, O.NON_DIRECTORY_FILE, RW) as h:
            assert h.create_action == outcome
            assert not h.is_directory and h.smb_path == name
    else:
        assert refused(share.open, name, disposition, 0, RW) == outcome
    if content is None:
        assert not (root / name).exists()
    else:
        assert (root / name).read_bytes() == content


@pytest.mark.parametrize(
    ("path", "disposition", "options", "outcome"),
    [
        ("newdir", D.CREATE, O.DIRECTORY_FILE, A.CREATED),
        ("newdir", D.OPEN_IF, O.DIRECTORY_FILE, A.CREATED),
        ("dir", D.OPEN_IF, O.DIRECTORY_FILE, A.OPENED),
        ("dir", D.OPEN, 0, A.OPENED),
        ("", D.OPEN, O.DIRECTORY_FILE, A.OPENED),
        ("", D.OPEN_IF, 0, A.OPENED),
        ("dir", D.CREATE, O.DIRECTORY_FILE, NTStatus.OBJECT_NAME_COLLISION),
        ("", D.CREATE, O.DIRECTORY_FILE, NTStatus.OBJECT_NAME_COLLISION),
        ("file.txt", D.CREATE, O.DIRECTORY_FILE, NTStatus.OBJECT_NAME_COLLISION),
        ("file.txt", D.OPEN, O.DIRECTORY_FILE, NTStatus.NOT_A_DIRECTORY),
        ("dir", D.OPEN, O.NON_DIRECTORY_FILE, NTStatus.FILE_IS_A_DIRECTORY),
        ("", D.OPEN, O.NON_DIRECTORY_FILE, NTStatus.FILE_IS_A_DIRECTORY),
        ("dir", D.OPEN, O.DIRECTORY_FILE | O.NON_DIRECTORY_FILE, NTStatus.INVALID_PARAMETER),
        ("newdir", D.OVERWRITE_IF, O.DIRECTORY_FILE, NTStatus.INVALID_PARAMETER),
        ("newdir", D.SUPERSEDE, O.DIRECTORY_FILE, NTStatus.INVALID_PARAMETER),
        ("dir", D.OVERWRITE_IF, 0, NTStatus.INVALID_PARAMETER),
        ("dir", D.SUPERSEDE, 0, NTStatus.INVALID_PARAMETER),
        ("file.txt", 6, 0, NTStatus.INVALID_PARAMETER),
        ("missing\\x", D.OPEN_IF, 0, NTStatus.OBJECT_PATH_NOT_FOUND),
        ("missing\\x", D.OPEN, 0, NTStatus.OBJECT_PATH_NOT_FOUND),
        ("file.txt\\x", D.OPEN_IF, 0, NTStatus.OBJECT_PATH_NOT_FOUND),
        ("dir\\missing", D.OPEN, 0, NTStatus.OBJECT_NAME_NOT_FOUND),
    ],
)
def test_directory_options(share: FsShare, path: str, disposition: int, options: int, outcome: int) -> None:
    if isinstance(outcome, A):
        with share.open(path, disposition, options, READ) as h:
            assert h.create_action == outcome and h.is_directory
            assert h.stat().is_directory
    else:
        assert refused(share.open, path, disposition, options, READ) == outcome


def test_created_directory_and_file_exist(share: FsShare, root: Path) -> None:
    with share.open("dir\\sub", D.CREATE, O.DIRECTORY_FILE, READ):
        pass
    with share.open("dir\\sub\\f", D.CREATE, 0, RW) as h:
        assert h.pwrite(b"abc", 0) == 3
    assert (root / "dir" / "sub" / "f").read_bytes() == b"abc"


def test_access_mapping() -> None:
    assert grant_access(AccessMask.GENERIC_READ, False) == 0x120089
    assert grant_access(AccessMask.GENERIC_WRITE, False) == 0x120116
    assert grant_access(AccessMask.GENERIC_ALL, False) == ALL
    assert grant_access(AccessMask.MAXIMUM_ALLOWED, False) == ALL
    assert grant_access(AccessMask.MAXIMUM_ALLOWED, True) & AccessMask.FILE_WRITE_DATA == 0
    assert grant_access(AccessMask.MAXIMUM_ALLOWED, True) & AccessMask.FILE_READ_DATA
    assert refused(grant_access, 0x00000200, False) == NTStatus.ACCESS_DENIED  # reserved bit
    assert refused(grant_access, AccessMask.ACCESS_SYSTEM_SECURITY, False) == NTStatus.PRIVILEGE_NOT_HELD
    assert refused(grant_access, AccessMask.GENERIC_ALL, True) == NTStatus.ACCESS_DENIED


# -- confinement -----------------------------------------------------------------------------------


def test_path_escapes(share: FsShare, root: Path) -> None:
    (root / "etc").symlink_to("/etc")
    (root / "up").symlink_to("../")
    (root / "dir" / "upup").symlink_to("../../share/file.txt")  # leaves and comes back: refused
    (root / "abs_out").symlink_to(root.parent)
    for path, expected in [
        ("..\\..\\etc\\passwd", NTStatus.OBJECT_PATH_SYNTAX_BAD),
        ("\\etc\\passwd", NTStatus.INVALID_PARAMETER),
        ("etc\\passwd", NTStatus.ACCESS_DENIED),
        ("etc", NTStatus.ACCESS_DENIED),
        ("up", NTStatus.ACCESS_DENIED),
        ("up\\share\\file.txt", NTStatus.ACCESS_DENIED),
        ("dir\\upup", NTStatus.ACCESS_DENIED),
        ("abs_out", NTStatus.ACCESS_DENIED),
    ]:
        assert refused(share.open, path, D.OPEN, 0, READ) == expected, path
    assert refused(share.stat, "etc\\passwd") == NTStatus.ACCESS_DENIED


def test_symlinks_inside_share(share: FsShare, root: Path) -> None:
    (root / "rel").symlink_to("file.txt")
    (root / "abs").symlink_to(root / "dir" / "inner.bin")
    (root / "dir" / "back").symlink_to("../file.txt")
    (root / "dlink").symlink_to("dir")
    (root / "chain").symlink_to("rel")
    for path, data in [("rel", CONTENT), ("abs", bytes(10)), ("dir\\back", CONTENT), ("chain", CONTENT)]:
        with share.open(path, D.OPEN, O.NON_DIRECTORY_FILE, READ) as h:
            assert h.pread(100, 0) == data, path
    with share.open("dlink\\inner.bin", D.OPEN, 0, READ) as h:
        assert h.pread(100, 0) == bytes(10)
    with share.open("dlink", D.OPEN, O.DIRECTORY_FILE, READ) as h:
        assert "inner.bin" in [n for n, _ in h.list_directory("*")]
    assert share.stat("rel").end_of_file == len(CONTENT)


def test_symlink_loops_and_dangling(share: FsShare, root: Path) -> None:
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    (root / "dangling").symlink_to("nowhere")
    assert refused(share.open, "loop1", D.OPEN, 0, READ) == NTStatus.ACCESS_DENIED
    assert refused(share.open, "dangling", D.OPEN, 0, READ) == NTStatus.OBJECT_NAME_NOT_FOUND
    assert refused(share.open, "dangling", D.OPEN_IF, 0, RW) == NTStatus.ACCESS_DENIED
    assert not (root / "nowhere").exists()


def test_listing_hides_what_cannot_be_served(share: FsShare, root: Path) -> None:
    (root / "etc").symlink_to("/etc")
    (root / "dangling").symlink_to("nowhere")
    (root / "rel").symlink_to("file.txt")
    os.mkfifo(root / "fifo")
    (root / "colon:name").write_bytes(b"")
    os.close(os.open(os.fsencode(root) + b"/bad\xff", os.O_CREAT | os.O_WRONLY))
    with share.open("", D.OPEN, 0, READ) as h:
        names = [n for n, _ in h.list_directory("*")]
    assert names == [".", "..", "dir", "file.txt", "rel"]
    assert refused(share.open, "fifo", D.OPEN, 0, READ) == NTStatus.ACCESS_DENIED  # and no hang


def test_delete_through_link_removes_the_link(share: FsShare, root: Path) -> None:
    (root / "rel").symlink_to("file.txt")
    with share.open("rel", D.OPEN, O.DELETE_ON_CLOSE, READ | AccessMask.DELETE) as h:
        assert h.pread(5, 0) == b"hello"
    assert not (root / "rel").is_symlink() and (root / "file.txt").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.sampled_from(["dir", "..", ".", "up", "etc", "self", "file.txt", "inner.bin"]), max_size=6)
)
def test_walks_never_leave_the_share(share: FsShare, root: Path, comps: list[str]) -> None:
    for name, target in [("up", "../"), ("etc", "/etc"), ("self", ".")]:
        if not (root / "dir" / name).is_symlink():
            (root / "dir" / name).symlink_to(target)
    inside = {(s.st_dev, s.st_ino) for s in (p.lstat() for p in [root, *root.rglob("*")])}
    try:
        s = share.stat("\\".join(comps))
    except FsError:
        return
    assert s.file_index in {ino for _, ino in inside}


# -- delete on close -------------------------------------------------------------------------------


def test_delete_on_close_file(share: FsShare, root: Path) -> None:
    with share.open("temp", D.CREATE, O.DELETE_ON_CLOSE, RW | AccessMask.DELETE) as h:
        h.pwrite(b"x", 0)
        assert (root / "temp").exists()
        st = h.stat()
        assert st.delete_pending
        std = fi.encode_file_info(FileInfoClass.STANDARD, st)
        assert std[20] == 1  # DeletePending
    assert not (root / "temp").exists()
    with share.open("file.txt", D.OPEN, 0, DELETE) as h:
        h.set_delete_on_close(True)
        h.set_delete_on_close(False)  # changed its mind
    assert (root / "file.txt").exists()
    with share.open("file.txt", D.OPEN, 0, DELETE) as h:
        h.set_info(fi.decode_set_file_info(FileInfoClass.DISPOSITION, b"\x01"))
    assert not (root / "file.txt").exists()


def test_delete_on_close_directories(share: FsShare, root: Path) -> None:
    with share.open("dir", D.OPEN, O.DIRECTORY_FILE, DELETE) as h:
        assert refused(h.set_delete_on_close, True) == NTStatus.DIRECTORY_NOT_EMPTY
    # FILE_DELETE_ON_CLOSE at CREATE on a non-empty directory: the close leaves it.
    with share.open("dir", D.OPEN, O.DIRECTORY_FILE | O.DELETE_ON_CLOSE, DELETE) as h:
        assert h.delete_on_close
    assert (root / "dir" / "inner.bin").exists()
    (root / "empty").mkdir()
    with share.open("empty", D.OPEN, O.DIRECTORY_FILE, DELETE) as h:
        h.set_delete_on_close(True)
    assert not (root / "empty").exists()
    with share.open("", D.OPEN, 0, DELETE) as h:
        assert refused(h.set_delete_on_close, True) == NTStatus.ACCESS_DENIED


def test_delete_on_close_refusals(share: FsShare, root: Path) -> None:
    assert refused(share.open, "file.txt", D.OPEN, O.DELETE_ON_CLOSE, READ) == NTStatus.ACCESS_DENIED
    with share.open("file.txt", D.OPEN, 0, READ) as h:
        assert refused(h.set_delete_on_close, True) == NTStatus.ACCESS_DENIED
    (root / "file.txt").chmod(0o444)
    with share.open("file.txt", D.OPEN, 0, DELETE) as h:
        assert h.stat().attributes & FileAttributes.READONLY
        assert refused(h.set_delete_on_close, True) == STATUS_CANNOT_DELETE
        ex = fi.DispositionInformationEx(
            fi.DispositionFlags.DELETE | fi.DispositionFlags.IGNORE_READONLY_ATTRIBUTE
        )
        h.set_info(ex)
    assert not (root / "file.txt").exists()


def test_delete_on_close_spares_a_replacement(share: FsShare, root: Path) -> None:
    with share.open("file.txt", D.OPEN, 0, DELETE) as h:
        h.set_delete_on_close(True)
        (root / "file.txt").unlink()
        (root / "file.txt").write_bytes(b"someone else's")
    assert (root / "file.txt").read_bytes() == b"someone else's"


def test_a_set_allocation_size_is_reported_until_the_file_changes(share: FsShare) -> None:
    with share.open("alloc.bin", D.CREATE, 0, RW) as h:
        h.set_allocation_size(0)
        assert h.stat().allocation_size == 0
        h.set_allocation_size(4096)
        assert (h.stat().allocation_size, h.stat().end_of_file) == (4096, 0)
        h.set_allocation_size(5000)  # rounded up to the allocation unit
        assert h.stat().allocation_size == 8192
        h.pwrite(b"x" * 10, 0)  # the data changed: from the blocks again
        assert h.stat().allocation_size in (0, 4096)
        h.set_allocation_size(0)  # never below the end of file: truncated to it
        assert (h.stat().allocation_size, h.stat().end_of_file) == (0, 0)


def test_close_is_told_whether_to_delete(share: FsShare, root: Path) -> None:
    """A server with several opens of the file decides which close deletes it."""
    h = share.open("file.txt", D.OPEN, 0, DELETE)
    h.set_delete_on_close(True)
    h.close(delete=False)
    assert (root / "file.txt").exists()
    share.open("file.txt", D.OPEN, 0, DELETE).close(delete=True)
    assert not (root / "file.txt").exists()


def test_check_delete_and_is_empty(share: FsShare, root: Path) -> None:
    with share.open("dir", D.OPEN, O.DIRECTORY_FILE, DELETE) as h:
        assert not h.is_empty()
        assert refused(h.check_delete) == NTStatus.DIRECTORY_NOT_EMPTY
        h.check_delete(check_empty=False)
        assert not h.delete_on_close  # checking marks nothing
    (root / "dir" / "inner.bin").unlink()
    with share.open("dir", D.OPEN, O.DIRECTORY_FILE, DELETE) as h:
        assert h.is_empty()
        h.check_delete()
    with share.open("file.txt", D.OPEN, 0, DELETE) as h:
        assert not h.is_empty()  # a file never is
    with share.open("file.txt", D.OPEN, 0, READ) as h:
        assert refused(h.check_delete) == NTStatus.ACCESS_DENIED


def test_read_only_delete_on_close_create_is_refused_before_creating(share: FsShare, root: Path) -> None:
    ro = FileAttributes.READONLY
    opts = O.DELETE_ON_CLOSE
    assert refused(share.open, "new.txt", D.CREATE, opts, ALL, file_attributes=ro) == STATUS_CANNOT_DELETE
    assert not (root / "new.txt").exists()
    # Only for a file being created: an existing writable file opens (its attributes are not replaced).
    with share.open("file.txt", D.OPEN_IF, opts, ALL, file_attributes=ro) as h:
        assert h.delete_on_close


def test_before_open_sees_an_existing_target_before_create_collides(share: FsShare) -> None:
    seen: list[tuple[int, int]] = []

    def pending(key: tuple[int, int]) -> None:
        seen.append(key)
        raise FsError(NTStatus.DELETE_PENDING, "being deleted")

    assert refused(share.open, "file.txt", D.CREATE, 0, READ, pending) == NTStatus.DELETE_PENDING
    assert len(seen) == 1
    assert share.open("new.txt", D.CREATE, 0, RW, pending).create_action == A.CREATED  # nothing there


# -- case-insensitive names -------------------------------------------------------------------------


def test_names_are_case_insensitive_and_case_preserving(share: FsShare, root: Path) -> None:
    with share.open("DIR\\Inner.BIN", D.OPEN, O.NON_DIRECTORY_FILE, READ) as h:
        assert h.pread(100, 0) == b"\x00" * 10
        assert h.open_info().name == "\\DIR\\Inner.BIN"  # as opened (FileNameInformation on NTFS)
    assert refused(share.open, "FILE.TXT", D.CREATE, 0, RW) == NTStatus.OBJECT_NAME_COLLISION
    assert refused(share.open, "Dir", D.CREATE, O.DIRECTORY_FILE, READ) == NTStatus.OBJECT_NAME_COLLISION
    with share.open("File.Txt", D.OPEN_IF, 0, READ) as h:
        assert h.create_action == A.OPENED and h.pread(100, 0) == b"hello world"
    with share.open("NEW.txt", D.CREATE, 0, RW):
        pass
    assert sorted(p.name for p in root.iterdir()) == ["NEW.txt", "dir", "file.txt"]
    assert refused(share.open, "nodir\\x", D.OPEN_IF, 0, RW) == NTStatus.OBJECT_PATH_NOT_FOUND
    assert not share.volume_info().fs_attributes & fi.FsAttributes.CASE_SENSITIVE_SEARCH


def test_an_exact_name_wins_over_other_cases(share: FsShare, root: Path) -> None:
    (root / "FILE.TXT").write_bytes(b"upper")
    with share.open("FILE.TXT", D.OPEN, 0, READ) as h:
        assert h.pread(100, 0) == b"upper"
    with share.open("file.txt", D.OPEN, 0, READ) as h:
        assert h.pread(100, 0) == b"hello world"
    with share.open("File.txt", D.OPEN, 0, READ) as h:  # neither: one of them
        assert h.pread(100, 0) in (b"upper", b"hello world")


def test_rename_changes_case_or_keeps_the_replaced_name(share: FsShare, root: Path) -> None:
    with share.open("file.txt", D.OPEN, 0, DELETE | READ) as h:
        h.rename("FILE.TXT", replace=False)
        assert h.smb_path == "FILE.TXT"
    assert sorted(p.name for p in root.iterdir()) == ["FILE.TXT", "dir"]
    (root / "other.txt").write_bytes(b"other")
    with share.open("FILE.TXT", D.OPEN, 0, DELETE | READ) as h:
        assert refused(h.rename, "OTHER.TXT", replace=False) == NTStatus.OBJECT_NAME_COLLISION
        h.rename("OTHER.TXT", replace=True)  # replaces other.txt, whose name stays
    assert sorted(p.name for p in root.iterdir()) == ["dir", "other.txt"]
    assert (root / "other.txt").read_bytes() == b"hello world"


def test_a_case_sensitive_share(root: Path) -> None:
    with FsShare(root, case_sensitive=True) as share:
        assert refused(share.open, "FILE.TXT", D.OPEN, 0, READ) == NTStatus.OBJECT_NAME_NOT_FOUND
        with share.open("FILE.TXT", D.CREATE, 0, RW):
            pass
        assert share.volume_info().fs_attributes & fi.FsAttributes.CASE_SENSITIVE_SEARCH
    assert sorted(p.name for p in root.iterdir()) == ["FILE.TXT", "dir", "file.txt"]


# -- rename ----------------------------------------------------------------------------------------


def test_rename(share: FsShare, root: Path) -> None:
    (root / "other.txt").write_bytes(b"other")
    with share.open("file.txt", D.OPEN, 0, DELETE | READ) as h:
        h.rename("renamed.txt", replace=False)
        assert h.smb_path == "renamed.txt" and h.open_info().name == "\\renamed.txt"
        assert refused(h.rename, "other.txt", replace=False) == NTStatus.OBJECT_NAME_COLLISION
        assert refused(h.rename, "dir", replace=True) == NTStatus.ACCESS_DENIED  # never replaces a directory
        assert refused(h.rename, "missing\\x", replace=False) == NTStatus.OBJECT_PATH_NOT_FOUND
        assert refused(h.rename, "bad*name", replace=False) == NTStatus.OBJECT_NAME_INVALID
        assert refused(h.rename, "..\\escape", replace=False) == NTStatus.OBJECT_PATH_SYNTAX_BAD
        h.rename("\\dir\\moved.txt", replace=False)  # a leading backslash is tolerated
        h.rename("dir\\MOVED.TXT", replace=False)  # case only
        h.rename("other.txt", replace=True)
        h.set_delete_on_close(True)
        h.rename("final.txt", replace=False)  # delete-on-close follows the new name
        assert h.pread(100, 0) == CONTENT
    assert sorted(p.name for p in root.iterdir()) == ["dir"]


def test_rename_callback_and_other_opens_following(share: FsShare, root: Path) -> None:
    (root / "other.txt").write_bytes(b"other")
    calls: list[tuple[tuple[int, int], tuple[int, int] | None]] = []
    dir_st = (root / "dir").stat()
    other_st = (root / "other.txt").stat()
    with (
        share.open("file.txt", D.OPEN, 0, DELETE | READ) as a,
        share.open("file.txt", D.OPEN, 0, DELETE) as b,
    ):
        a.rename("dir\\moved.txt", False, lambda d, r: calls.append((d, r)))
        assert calls == [((dir_st.st_dev, dir_st.st_ino), None)]

        def refuse(directory: tuple[int, int], replaced: tuple[int, int] | None) -> None:
            raise FsError(NTStatus.SHARING_VIOLATION, "no")

        assert refused(a.rename, "x.txt", False, refuse) == NTStatus.SHARING_VIOLATION
        assert (root / "dir" / "moved.txt").exists()  # a refused rename moves nothing
        calls.clear()
        a.rename("other.txt", True, lambda d, r: calls.append((d, r)))
        assert calls[0][1] == (other_st.st_dev, other_st.st_ino)  # the file it replaces
        b.follow_rename(a)
        assert b.smb_path == "other.txt" and b.open_info().name == "\\other.txt"
        b.set_delete_on_close(True)
    assert sorted(p.name for p in root.iterdir()) == ["dir"]  # b deleted it at its new name


def test_rename_directory_and_access(share: FsShare, root: Path) -> None:
    with share.open("dir", D.OPEN, O.DIRECTORY_FILE, DELETE | READ) as h:
        assert refused(h.rename, "file.txt", replace=True) == NTStatus.ACCESS_DENIED  # file by a dir
        h.rename("dir2", replace=False)
        assert [n for n, _ in h.list_directory("*")][2:] == ["inner.bin"]
        assert refused(h.rename, "dir2\\sub", replace=False) == NTStatus.INVALID_PARAMETER  # into itself
    assert (root / "dir2" / "inner.bin").exists()
    with share.open("file.txt", D.OPEN, 0, READ) as h:
        assert refused(h.rename, "x", replace=False) == NTStatus.ACCESS_DENIED
    with share.open("", D.OPEN, 0, ALL) as h:
        assert refused(h.rename, "x", replace=False) == NTStatus.ACCESS_DENIED
    with share.open("file.txt", D.OPEN, 0, ALL) as h:
        h.set_info(
            fi.decode_set_file_info(FileInfoClass.RENAME, fi.RenameInformation(False, "dir2\\f").encode())
        )
    assert (root / "dir2" / "f").read_bytes() == CONTENT


# -- listing ---------------------------------------------------------------------------------------


@pytest.fixture
def listing(share: FsShare, root: Path) -> Iterator[FsHandle]:
    for name in ["a.txt", "B.TXT", "noext", ".hidden", "x.y.z", "readme.md"]:
        (root / name).write_bytes(b"")
    with share.open("", D.OPEN, O.DIRECTORY_FILE, READ) as h:
        yield h


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", [".", "..", ".hidden", "a.txt", "B.TXT", "dir", "file.txt", "noext", "readme.md", "x.y.z"]),
        ("*.*", [".", "..", ".hidden", "a.txt", "B.TXT", "dir", "file.txt", "noext", "readme.md", "x.y.z"]),
        ("", [".", "..", ".hidden", "a.txt", "B.TXT", "dir", "file.txt", "noext", "readme.md", "x.y.z"]),
        ("*.txt", ["a.txt", "B.TXT", "file.txt"]),
        ("*.TXT", ["a.txt", "B.TXT", "file.txt"]),
        ("?.txt", ["a.txt", "B.TXT"]),
        ("A.TXT", ["a.txt"]),
        ("no*", ["noext"]),
        ("*e*", [".hidden", "file.txt", "noext", "readme.md"]),
        ("x.*.z", ["x.y.z"]),
        (".", ["."]),
        ("..", [".."]),
        ("nothing*", []),
        ("<.txt", ["a.txt", "B.TXT", "file.txt"]),  # DOS_STAR up to the last dot
        ('<"*', [".", "..", ".hidden", "a.txt", "B.TXT", "dir", "file.txt", "noext", "readme.md", "x.y.z"]),
        (">.txt", ["a.txt", "B.TXT"]),
        (">>>>.txt", ["a.txt", "B.TXT", "file.txt"]),
        ('noext"', ["noext"]),
    ],
)
def test_wildcards(listing: FsHandle, pattern: str, expected: list[str]) -> None:
    assert [n for n, _ in listing.list_directory(pattern)] == expected


def test_listing_stats(listing: FsHandle, root: Path) -> None:
    entries = dict(listing.list_directory("*"))
    assert entries["."].is_directory and entries[".."].file_index == entries["."].file_index  # root: itself
    assert entries["file.txt"].end_of_file == len(CONTENT)
    assert entries["file.txt"].file_index == (root / "file.txt").stat().st_ino
    assert entries[".hidden"].attributes & FileAttributes.HIDDEN
    assert entries["dir"].attributes == FileAttributes.DIRECTORY
    data, count = fi.encode_directory_entries(
        FileInfoClass.ID_BOTH_DIRECTORY, listing.list_directory("*"), 4096
    )
    assert count == len(entries) and [e.name for e in fi.decode_directory_entries(37, data)] == list(entries)


def test_listing_refusals(share: FsShare, listing: FsHandle) -> None:
    assert refused(listing.list_directory, "a\\b") == NTStatus.OBJECT_NAME_INVALID
    assert refused(listing.list_directory, "a:b") == NTStatus.OBJECT_NAME_INVALID
    with share.open("file.txt", D.OPEN, 0, READ) as h:
        assert refused(h.list_directory, "*") == NTStatus.INVALID_PARAMETER
    with share.open("dir", D.OPEN, 0, AccessMask.FILE_READ_ATTRIBUTES) as h:
        assert refused(h.list_directory, "*") == NTStatus.ACCESS_DENIED


def test_subdirectory_dotdot(share: FsShare, root: Path) -> None:
    with share.open("dir", D.OPEN, 0, READ) as h:
        entries = dict(h.list_directory("*"))
    assert entries[".."].file_index == root.stat().st_ino
    assert entries["."].file_index == (root / "dir").stat().st_ino


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*", "anything", True),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a*c", "ac", True),
        ("a*c", "abbbc", True),
        ("**x", "x", True),
        ("*.*", "noext", True),
        ("*.", "noext", False),
        ("<", "a.b", False),
        ("<", "ab", True),
        ("<.b", "a.x.b", True),
        (">", "", True),
        (">>", "a", True),
        (">", "ab", False),
        ('a"', "a", True),
        ('a"b', "a.b", True),
        ('a"b', "ab", False),
        ("ÄB", "äb", True),
        ("straße", "STRASSE", False),
    ],
)
def test_compile_pattern(pattern: str, name: str, matches: bool) -> None:
    assert compile_pattern(pattern)(name) is matches


def test_long_patterns_are_fine() -> None:
    assert compile_pattern("*" * 1000 + "z")("a" * 255 + "z")
    assert refused(compile_pattern, "?" * 2000) == NTStatus.OBJECT_NAME_INVALID


# -- data ------------------------------------------------------------------------------------------


def test_pread_pwrite(share: FsShare, root: Path) -> None:
    with share.open("data", D.CREATE, O.NON_DIRECTORY_FILE, RW) as h:
        assert h.pwrite(b"abcdef", 0) == 6
        assert h.pwrite(memoryview(b"XY"), 2) == 2
        assert h.pread(6, 0) == b"abXYef"
        assert h.pread(100, 4) == b"ef"  # short at EOF
        assert h.pread(10, 6) == b"" and h.pread(10, 1000) == b""  # past EOF
        assert h.pwrite(bytearray(b"Z"), 10) == 1  # beyond EOF: a hole of zeros
        assert h.pread(20, 0) == b"abXYef\0\0\0\0Z"
        buf = bytearray(8)
        assert h.readinto(memoryview(buf)[2:], 1) == 6
        assert buf == b"\0\0bXYef\0"
        assert h.readinto(memoryview(bytearray(4)), 100) == 0
        assert h.stat().end_of_file == 11
        h.truncate(3)
        assert h.pread(10, 0) == b"abX"
        h.set_allocation_size(1 << 20)  # nothing reserved, nothing changed
        h.set_allocation_size(2)
        assert h.stat().end_of_file == 2
        h.flush()
        assert refused(h.pread, 1, -1) == NTStatus.INVALID_PARAMETER
        assert refused(h.pwrite, b"x", (1 << 63) - 1) == NTStatus.INVALID_PARAMETER
        # NTFS's limit on file sizes: no write starts there, none makes the file reach it.
        assert refused(h.pwrite, b"x", MAX_FILE_SIZE) == NTStatus.INVALID_PARAMETER
        assert refused(h.pwrite, b"x", MAX_FILE_SIZE - 1) == STATUS_DISK_FULL
        assert h.pwrite(b"", MAX_FILE_SIZE) == 0  # writing nothing is fine anywhere
        assert refused(h.truncate, -1) == NTStatus.INVALID_PARAMETER
    assert refused(h.pread, 1, 0) == NTStatus.FILE_CLOSED
    h.close()  # twice: harmless
    assert (root / "data").read_bytes() == b"ab"


def test_io_access_checks(share: FsShare) -> None:
    with share.open("file.txt", D.OPEN, 0, AccessMask.FILE_READ_ATTRIBUTES) as h:
        assert refused(h.pread, 1, 0) == NTStatus.ACCESS_DENIED
        assert refused(h.pwrite, b"x", 0) == NTStatus.ACCESS_DENIED
        assert refused(h.flush) == NTStatus.ACCESS_DENIED
        assert refused(h.truncate, 0) == NTStatus.ACCESS_DENIED
        assert refused(h.set_times, last_write=fi.FILETIME_UNIX_EPOCH) == NTStatus.ACCESS_DENIED
        assert h.stat().end_of_file == len(CONTENT)
    with share.open("file.txt", D.OPEN, 0, AccessMask.FILE_EXECUTE) as h:
        assert h.pread(5, 0) == b"hello"  # FILE_EXECUTE reads too
    with share.open("dir", D.OPEN, 0, ALL) as h:
        assert refused(h.pread, 1, 0) == NTStatus.INVALID_DEVICE_REQUEST
        assert refused(h.pwrite, b"x", 0) == NTStatus.INVALID_DEVICE_REQUEST
        assert refused(h.truncate, 0) == NTStatus.INVALID_PARAMETER
        h.flush()


def test_readinto_nowait_reads_the_page_cache_with_readinto_checks(
    share: FsShare, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same count and checks as readinto; None (never an error) when the kernel would
    wait or the read fails, which readinto then reports."""
    with share.open("file.txt", D.OPEN, 0, READ) as h:
        buf = bytearray(8)
        assert h.readinto_nowait(memoryview(buf)[2:], 6) == 5  # just written: cached; short at EOF
        assert buf == b"\0\0world\0"
        assert h.readinto_nowait(memoryview(bytearray(4)), 11) == 0  # at EOF
        assert h.readinto_nowait(memoryview(bytearray(4)), 100) == 0  # past it
        assert h.readinto_nowait(memoryview(bytearray(0)), 0) == 0
        assert refused(h.readinto_nowait, memoryview(bytearray(1)), -1) == NTStatus.INVALID_PARAMETER
        real = os.preadv

        def preadv(fd: int, buffers: list[memoryview], offset: int, flags: int = 0) -> int:
            if not flags & os.RWF_NOWAIT:
                return real(fd, buffers, offset, flags)
            if offset >= 4:  # only the first 4 bytes are cached
                raise BlockingIOError(errno.EAGAIN, "would block")
            return real(fd, [buffers[0][: 4 - offset]], offset, flags)

        monkeypatch.setattr(os, "preadv", preadv)
        assert h.readinto_nowait(memoryview(bytearray(4)), 0) == 4
        assert h.readinto_nowait(memoryview(bytearray(8)), 0) is None  # short, then EAGAIN
        assert h.readinto_nowait(memoryview(bytearray(4)), 6) is None  # EAGAIN
        buf = bytearray(8)
        assert h.readinto(memoryview(buf), 0) == 8 and buf == b"hello wo"

        def failing(fd: int, buffers: list[memoryview], offset: int, flags: int = 0) -> int:
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr(os, "preadv", failing)
        assert h.readinto_nowait(memoryview(bytearray(4)), 0) is None
        assert refused(h.readinto, memoryview(bytearray(4)), 0) == ERRNO_STATUS[errno.EIO]
        monkeypatch.undo()
    assert refused(h.readinto_nowait, memoryview(bytearray(1)), 0) == NTStatus.FILE_CLOSED
    with share.open("file.txt", D.OPEN, 0, AccessMask.FILE_READ_ATTRIBUTES) as h:
        assert refused(h.readinto_nowait, memoryview(bytearray(1)), 0) == NTStatus.ACCESS_DENIED
    with share.open("dir", D.OPEN, 0, ALL) as h:
        assert refused(h.readinto_nowait, memoryview(bytearray(1)), 0) == NTStatus.INVALID_DEVICE_REQUEST
    if share.xattrs:  # a stream's attribute may have to come from the disk: never on the loop
        with share.open("file.txt:s", D.CREATE, 0, RW) as h:
            assert h.pwrite(b"data", 0) == 4
            assert h.readinto_nowait(memoryview(bytearray(4)), 0) is None


def test_times_attributes_and_set_info(share: FsShare, root: Path) -> None:
    when = fi.unix_ns_to_filetime(1_600_000_000 * 10**9)
    with share.open("file.txt", D.OPEN, 0, RW) as h:
        before = h.stat()
        h.set_times(last_write=when, last_access=0, creation=-1, change=-2)
        after = h.stat()
        assert after.last_write_time == when and after.last_access_time == before.last_access_time
        h.set_info(fi.BasicInformation(last_access_time=when, attributes=FileAttributes.READONLY))
        assert h.stat().last_access_time == when and h.stat().attributes & FileAttributes.READONLY
        assert not (root / "file.txt").stat().st_mode & 0o222
        h.set_info(fi.BasicInformation(attributes=FileAttributes.NORMAL))
        assert (root / "file.txt").stat().st_mode & 0o200
        assert refused(h.set_attributes, FileAttributes.DIRECTORY) == NTStatus.INVALID_PARAMETER
        h.set_info(fi.EndOfFileInformation(5))
        assert h.pread(100, 0) == b"hello"
        h.set_info(fi.AllocationInformation(1))
        h.set_info(fi.PositionInformation(42))
        h.set_info(fi.ModeInformation(0x2))
        info = h.open_info()
        assert (info.position, info.mode, info.name, info.access_flags) == (42, 0x2, "\\file.txt", RW)
        assert h.pread(100, 0) == b"h"
    with share.open("file.txt", D.OPEN, O.WRITE_THROUGH, READ) as h:
        assert h.mode == 0x2


# -- read-only share -------------------------------------------------------------------------------


def test_read_only_share(root: Path) -> None:
    with FsShare(root, read_only=True) as ro:
        with ro.open("file.txt", D.OPEN, 0, READ) as h:
            assert h.pread(5, 0) == b"hello"
            assert refused(h.set_delete_on_close, True) == NTStatus.ACCESS_DENIED
        with ro.open("file.txt", D.OPEN_IF, 0, AccessMask.MAXIMUM_ALLOWED) as h:
            assert not h.granted_access & AccessMask.FILE_WRITE_DATA
            assert refused(h.pwrite, b"x", 0) == NTStatus.ACCESS_DENIED
        for path, disposition, access in [
            ("file.txt", D.OPEN, RW),
            ("file.txt", D.OPEN, AccessMask.GENERIC_ALL),
            ("file.txt", D.OPEN, AccessMask.DELETE),
            ("file.txt", D.OVERWRITE_IF, READ),
            ("file.txt", D.SUPERSEDE, READ),
            ("new.txt", D.CREATE, READ),
            ("new.txt", D.OPEN_IF, READ),
            ("newdir", D.CREATE, READ),
        ]:
            assert refused(ro.open, path, disposition, 0, access) == NTStatus.ACCESS_DENIED, (
                path,
                disposition,
            )
        assert ro.volume_info().read_only
    assert (root / "file.txt").read_bytes() == CONTENT and not (root / "new.txt").exists()


def test_volume_info(share: FsShare, root: Path) -> None:
    v = share.volume_info()
    s = os.statvfs(root)
    assert v.block_size == (s.f_frsize or s.f_bsize) and v.total_blocks == s.f_blocks
    assert v.label == "share" and not v.read_only
    assert v.serial_number == share.volume_info().serial_number
    for info_class in fi.FS_INFO_MIN_SIZE:
        assert len(fi.encode_fs_info(info_class, v)) >= fi.FS_INFO_MIN_SIZE[info_class]


def test_share_root_must_exist(tmp_path: Path) -> None:
    assert refused(FsShare, tmp_path / "missing") == NTStatus.OBJECT_NAME_NOT_FOUND


# -- errno translation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (errno.ENOENT, NTStatus.OBJECT_NAME_NOT_FOUND),
        (errno.EEXIST, NTStatus.OBJECT_NAME_COLLISION),
        (errno.EACCES, NTStatus.ACCESS_DENIED),
        (errno.EPERM, NTStatus.ACCESS_DENIED),
        (errno.ENOTDIR, NTStatus.NOT_A_DIRECTORY),
        (errno.EISDIR, NTStatus.FILE_IS_A_DIRECTORY),
        (errno.ENOTEMPTY, NTStatus.DIRECTORY_NOT_EMPTY),
        (errno.ENOSPC, STATUS_DISK_FULL),
        (errno.EROFS, STATUS_MEDIA_WRITE_PROTECTED),
        (errno.ENAMETOOLONG, NTStatus.OBJECT_NAME_INVALID),
        (errno.ELOOP, NTStatus.ACCESS_DENIED),
        (errno.EXDEV, STATUS_NOT_SAME_DEVICE),
        (errno.ECHILD, NTStatus.UNSUCCESSFUL),
    ],
)
def test_errno_table(err: int, expected: int) -> None:
    assert status_of(OSError(err, os.strerror(err))) == expected
    assert STATUS_DISK_FULL == 0xC000007F and STATUS_MEDIA_WRITE_PROTECTED == 0xC00000A2
    assert all(isinstance(v, int) for v in ERRNO_STATUS.values())


def test_fs_error_text() -> None:
    assert str(FsError(NTStatus.ACCESS_DENIED, "nope")) == "nope (STATUS_ACCESS_DENIED)"
    assert "0xC000007F" in str(FsError(STATUS_DISK_FULL, "full"))


def test_swap_for_a_link_during_lookup_is_refused(
    share: FsShare, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lstat said directory (or file), but by the time of the open the entry is a link
    out of the share: O_NOFOLLOW makes the open fail instead of following it."""
    (root / "swap").symlink_to("/etc")
    (root / "swapfile").symlink_to("/etc/hostname")
    real_stat = os.stat
    pretend = {"swap": real_stat(root / "dir"), "swapfile": real_stat(root / "file.txt")}

    def racing_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if isinstance(path, str) and path in pretend:
            return pretend[path]
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", racing_stat)
    assert refused(share.open, "swap\\hostname", D.OPEN, 0, READ) == NTStatus.ACCESS_DENIED
    assert refused(share.open, "swap", D.OPEN, 0, READ) == NTStatus.ACCESS_DENIED
    assert refused(share.open, "swapfile", D.OPEN, 0, READ) == NTStatus.ACCESS_DENIED


def test_maximum_allowed_falls_back_to_what_the_file_allows(
    share: FsShare, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root, permissions never refuse: pretend the file is not writable for us."""
    real_open = os.open

    def no_write(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if path == "file.txt" and flags & os.O_ACCMODE != os.O_RDONLY:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_write)
    with share.open("file.txt", D.OPEN, 0, AccessMask.MAXIMUM_ALLOWED) as h:
        assert not h.granted_access & (AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA)
        assert h.granted_access & AccessMask.FILE_READ_DATA and h.granted_access & AccessMask.DELETE
        assert h.pread(5, 0) == b"hello"
        assert refused(h.pwrite, b"x", 0) == NTStatus.ACCESS_DENIED
    assert refused(share.open, "file.txt", D.OPEN, 0, RW) == NTStatus.ACCESS_DENIED
    assert (
        refused(share.open, "file.txt", D.OVERWRITE, 0, AccessMask.MAXIMUM_ALLOWED) == NTStatus.ACCESS_DENIED
    )


def test_resolve(share: FsShare, root: Path) -> None:
    (root / "etc").symlink_to("/etc")
    (root / "rel").symlink_to("dir/inner.bin")
    assert share.resolve("") == root
    assert share.resolve("dir\\inner.bin") == root / "dir" / "inner.bin"
    assert share.resolve("rel") == root / "dir" / "inner.bin"
    assert share.resolve("dir\\new", must_exist=False) == root / "dir" / "new"
    assert refused(share.resolve, "dir\\new") == NTStatus.OBJECT_NAME_NOT_FOUND
    assert refused(share.resolve, "nodir\\new") == NTStatus.OBJECT_PATH_NOT_FOUND
    assert refused(share.resolve, "etc\\passwd") == NTStatus.ACCESS_DENIED
    assert refused(share.resolve, "..\\x") == NTStatus.OBJECT_PATH_SYNTAX_BAD
    assert refused(share.resolve, "\\x") == NTStatus.INVALID_PARAMETER
    assert refused(share.resolve, "a:b") == NTStatus.OBJECT_NAME_INVALID


# -- named streams ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("file.txt", ("file.txt", None)),
        ("file.txt::$DATA", ("file.txt", None)),
        ("dir\\file.txt:s1", ("dir\\file.txt", "s1")),
        ("dir\\file.txt:Zone.Identifier:$data", ("dir\\file.txt", "Zone.Identifier")),
        ("dir:with space", ("dir", "with space")),
    ],
)
def test_split_stream(path: str, expected: tuple[str, str | None]) -> None:
    assert split_stream(path) == expected


@pytest.mark.parametrize("path", ["f:s:$INDEX_ALLOCATION", "f:", "f:s:$DATA:x", "f:a/b", "f:a\x00b"])
def test_split_stream_refusals(path: str) -> None:
    assert refused(split_stream, path) == NTStatus.OBJECT_NAME_INVALID


def test_named_streams_hold_their_own_data(share: FsShare, root: Path) -> None:
    if not share.xattrs:
        pytest.skip("the filesystem keeps no user extended attributes")
    with share.open("file.txt:Extra", D.CREATE, 0, RW | DELETE) as h:
        assert h.create_action == A.CREATED and h.stat().end_of_file == 0
        assert h.pwrite(b"stream data", 0) == 11
        assert h.pwrite(b"!", 20) == 1  # past the end: a gap of zeros
        assert h.pread(100, 0) == b"stream data" + bytes(9) + b"!"
        h.truncate(6)
        assert h.stat().end_of_file == 6 and not h.stat().is_directory
        with share.open("file.txt", D.OPEN, 0, READ) as file:
            assert h.identity != file.identity and h.identity[0] == file.identity[0]
        assert h.open_info().name == "\\file.txt:Extra"
    assert (root / "file.txt").read_bytes() == b"hello world"  # the file's data is untouched
    with share.open("FILE.TXT:extra:$DATA", D.OPEN, 0, READ) as h:  # names ignore case
        assert h.pread(100, 0) == b"stream"
        assert h.streams() == (("Extra", 6),)
    assert refused(share.open, "file.txt:extra", D.CREATE, 0, RW) == NTStatus.OBJECT_NAME_COLLISION
    assert refused(share.open, "file.txt:other", D.OPEN, 0, READ) == NTStatus.OBJECT_NAME_NOT_FOUND
    with share.open("file.txt:extra", D.OVERWRITE_IF, 0, RW) as h:
        assert h.create_action == A.OVERWRITTEN and h.pread(10, 0) == b""
    with share.open("file.txt:extra", D.OPEN, 0, DELETE | READ) as h:
        h.set_delete_on_close(True)
    with share.open("file.txt", D.OPEN, 0, READ) as h:
        assert h.streams() == ()
    assert refused(share.open, "file.txt:s", D.CREATE, O.DIRECTORY_FILE, RW) == NTStatus.NOT_A_DIRECTORY


def test_creating_a_stream_creates_its_file(share: FsShare, root: Path) -> None:
    if not share.xattrs:
        pytest.skip("the filesystem keeps no user extended attributes")
    assert refused(share.open, "new.txt:s", D.OPEN, 0, READ) == NTStatus.OBJECT_NAME_NOT_FOUND
    with share.open("new.txt:s", D.OPEN_IF, 0, RW) as h:
        h.pwrite(b"x" * 100, 0)
    assert (root / "new.txt").read_bytes() == b""
    with share.open("dir:s", D.CREATE, 0, RW) as h:  # a directory has streams too
        h.pwrite(b"d", 0)
    with share.open("dir", D.OPEN, O.DIRECTORY_FILE, READ) as d:
        assert d.streams() == (("s", 1),)
        assert d.list_directory("*")[2:][0][0] == "inner.bin"  # streams are not entries


def test_a_stream_too_large_for_an_attribute_is_disk_full(share: FsShare) -> None:
    if not share.xattrs:
        pytest.skip("the filesystem keeps no user extended attributes")
    with share.open("file.txt:big", D.CREATE, 0, RW) as h:
        assert refused(h.pwrite, b"x", MAX_STREAM_SIZE) == STATUS_DISK_FULL
        assert refused(h.truncate, 1 << 62) == STATUS_DISK_FULL  # no 4 EiB of zeros made first
        assert h.pwrite(b"", 1000) == 0 and h.stat().end_of_file == 0


def test_normalized_name_is_the_stored_case(share: FsShare, root: Path) -> None:
    (root / "dir" / "MiXed.TXT").write_bytes(b"")
    with share.open("DIR\\mixed.txt", D.OPEN, 0, READ) as h:
        info = h.open_info()
        assert info.name == "\\DIR\\mixed.txt" and info.normalized_name == "\\dir\\MiXed.TXT"


def test_a_stream_is_renamed_within_its_file(share: FsShare) -> None:
    if not share.xattrs:
        pytest.skip("the filesystem keeps no user extended attributes")
    for name in ("one", "two"):
        with share.open(f"file.txt:{name}", D.CREATE, 0, RW) as h:
            h.pwrite(name.encode(), 0)
    with share.open("file.txt:one", D.OPEN, 0, RW | DELETE) as h:
        assert refused(h.rename, ":TWO", replace=False) == NTStatus.OBJECT_NAME_COLLISION
        assert refused(h.rename, "other.txt", replace=False) == NTStatus.INVALID_PARAMETER
        assert refused(h.rename, "::$DATA", replace=True) == NTStatus.INVALID_PARAMETER
        h.rename(":renamed:$DATA", replace=False)
        assert h.smb_path == "file.txt:renamed" and h.pread(10, 0) == b"one"
        h.rename(":two", replace=True)
        assert h.streams() == (("two", 3),)
        assert h.pread(10, 0) == b"one"


def test_no_stream_is_created_on_a_read_only_share(root: Path) -> None:
    with FsShare(root) as writable:
        if not writable.xattrs:
            pytest.skip("the filesystem keeps no user extended attributes")
        with writable.open("file.txt:kept", D.CREATE, 0, RW) as h:
            h.pwrite(b"k", 0)
    with FsShare(root, read_only=True) as share:
        assert refused(share.open, "file.txt:new", D.OPEN_IF, 0, READ) == NTStatus.ACCESS_DENIED
        with share.open("file.txt:kept", D.OPEN_IF, 0, READ) as h:
            assert h.pread(10, 0) == b"k"
            assert h.streams() == (("kept", 1),)
