"""smbcore.fileinfo: the information classes, decoded back with smbprotocol's independent
structures where it has them, the SET_INFO decoders round-tripped and fed hostile bytes."""

from __future__ import annotations

import contextlib
import datetime
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smbcore import fileinfo as fi
from smbcore.errors import RemoteProtocolError
from smbcore.fileinfo import (
    FileAttributes,
    FileInfoClass,
    FileStat,
    FsInfoClass,
    InfoClassError,
    OpenInfo,
    VolumeInfo,
)
from smbcore.ntstatus import NTStatus
from smbprotocol import file_info as sp
from smbprotocol.open import SMB2QueryDirectoryRequest

EPOCH = fi.FILETIME_UNIX_EPOCH
T0 = 133_000_000_000_000_000  # 2022-06-18, a FILETIME


def filestat(**changes: object) -> FileStat:
    base: dict[str, object] = {
        "creation_time": T0,
        "last_access_time": T0 + 1_000,
        "last_write_time": T0 + 2_000,
        "change_time": T0 + 3_000,
        "allocation_size": 8192,
        "end_of_file": 5000,
        "attributes": FileAttributes.ARCHIVE | FileAttributes.HIDDEN,
        "file_index": 0x1122334455,
        "number_of_links": 2,
        "delete_pending": False,
        "is_directory": False,
    }
    base.update(changes)
    return FileStat(**base)  # type: ignore[arg-type]


def fake_stat(mode: int, *, size: int = 0, blocks: int = 0, nlink: int = 1, ino: int = 7) -> os.stat_result:
    ns = {"st_atime_ns": 1_000_000_123, "st_mtime_ns": 3_000_000_456, "st_ctime_ns": 2_000_000_789}
    return os.stat_result((mode, ino, 1, nlink, 0, 0, size, 1, 3, 2), {**ns, "st_blocks": blocks})


def filetime(dt: datetime.datetime) -> int:
    """A FILETIME from smbprotocol's datetime (microsecond precision)."""
    delta = dt.replace(tzinfo=datetime.UTC) - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return EPOCH + (delta // datetime.timedelta(microseconds=1)) * 10


def parse(structure: object, data: bytes) -> object:
    structure.unpack(data)  # type: ignore[attr-defined]
    return structure


# -- FILETIME and FileStat ---------------------------------------------------------------------


def test_filetime_conversion() -> None:
    assert fi.unix_ns_to_filetime(0) == EPOCH
    assert fi.unix_ns_to_filetime(1_234_567_899) == EPOCH + 12_345_678
    assert fi.filetime_to_unix_ns(EPOCH + 10) == 1000
    assert fi.unix_ns_to_filetime(-(10**30)) == 0  # before 1601: clamped


def test_stat_to_filestat_file() -> None:
    s = fi.stat_to_filestat(fake_stat(0o100644, size=5000, blocks=9, nlink=3, ino=99), "data.bin")
    assert s.creation_time == fi.unix_ns_to_filetime(2_000_000_789)  # older of mtime and ctime
    assert s.last_access_time == EPOCH + 10_000_001
    assert s.last_write_time == EPOCH + 30_000_004
    assert s.change_time == EPOCH + 20_000_007
    assert (s.end_of_file, s.allocation_size) == (5000, 8192)  # 9 * 512 rounded up to 4096
    assert s.attributes == FileAttributes.ARCHIVE
    assert (s.file_index, s.number_of_links, s.is_directory, s.delete_pending, s.ea_size) == (
        99,
        3,
        False,
        False,
        0,
    )


@pytest.mark.parametrize(
    ("mode", "name", "attrs"),
    [
        (0o100644, "a.txt", FileAttributes.ARCHIVE),
        (0o100444, "a.txt", FileAttributes.ARCHIVE | FileAttributes.READONLY),
        (0o100644, ".profile", FileAttributes.ARCHIVE | FileAttributes.HIDDEN),
        (0o100400, ".key", FileAttributes.ARCHIVE | FileAttributes.HIDDEN | FileAttributes.READONLY),
        (0o040755, "dir", FileAttributes.DIRECTORY),
        (0o040555, "dir", FileAttributes.DIRECTORY),  # READONLY is not inferred for directories
        (0o040755, ".git", FileAttributes.DIRECTORY | FileAttributes.HIDDEN),
        (0o040755, ".", FileAttributes.DIRECTORY),
        (0o040755, "..", FileAttributes.DIRECTORY),
    ],
)
def test_attributes(mode: int, name: str, attrs: FileAttributes) -> None:
    assert fi.stat_to_filestat(fake_stat(mode), name).attributes == attrs


def test_directory_and_allocation_rules() -> None:
    d = fi.stat_to_filestat(fake_stat(0o040755, size=4096, blocks=8, nlink=5), "d")
    assert (d.end_of_file, d.allocation_size, d.number_of_links, d.is_directory) == (0, 0, 1, True)
    # No blocks reported (inline data, some filesystems): the size rounded up.
    assert fi.stat_to_filestat(fake_stat(0o100644, size=1, blocks=0), "f").allocation_size == 4096
    assert fi.stat_to_filestat(fake_stat(0o100644, size=0, blocks=0), "f").allocation_size == 0
    # Sparse: what is allocated, not the size.
    assert fi.stat_to_filestat(fake_stat(0o100644, size=10**9, blocks=16), "f").allocation_size == 8192


def test_real_stat(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"x" * 10)
    s = fi.stat_to_filestat(os.stat(path), "f")
    assert s.end_of_file == 10 and s.allocation_size % 4096 == 0 and s.allocation_size >= 4096
    assert s.file_index == os.stat(path).st_ino


# -- file information classes, against smbprotocol ----------------------------------------------


def test_basic_information() -> None:
    s = filestat()
    data = fi.encode_file_info(FileInfoClass.BASIC, s)
    assert len(data) == 40
    p = parse(sp.FileBasicInformation(), data)
    assert p["creation_time"].get_value() == T0  # type: ignore[index]
    assert p["last_access_time"].get_value() == T0 + 1000  # type: ignore[index]
    assert p["last_write_time"].get_value() == T0 + 2000  # type: ignore[index]
    assert p["change_time"].get_value() == T0 + 3000  # type: ignore[index]
    assert p["file_attributes"].get_value() == 0x22  # type: ignore[index]


@pytest.mark.parametrize(("pending", "links"), [(False, 2), (True, 1)])
def test_standard_information(pending: bool, links: int) -> None:
    data = fi.encode_file_info(FileInfoClass.STANDARD, filestat(delete_pending=pending))
    p = parse(sp.FileStandardInformation(), data)
    assert len(data) == 24
    assert p["allocation_size"].get_value() == 8192  # type: ignore[index]
    assert p["end_of_file"].get_value() == 5000  # type: ignore[index]
    assert p["number_of_links"].get_value() == links  # type: ignore[index]
    assert p["delete_pending"].get_value() is pending  # type: ignore[index]
    assert p["directory"].get_value() is False  # type: ignore[index]


def test_small_classes() -> None:
    s = filestat(ea_size=0)
    o = OpenInfo(name="\\d\\f", access_flags=0x12019F, position=77, mode=0x20, alignment=0)
    cases = [
        (FileInfoClass.INTERNAL, sp.FileInternalInformation(), "index_number", 0x1122334455),
        (FileInfoClass.EA, sp.FileEaInformation(), "ea_size", 0),
        (FileInfoClass.ACCESS, sp.FileAccessInformation(), "access_flags", 0x12019F),
        (FileInfoClass.POSITION, sp.FilePositionInformation(), "current_byte_offset", 77),
        (FileInfoClass.MODE, sp.FileModeInformation(), "mode", 0x20),
        (FileInfoClass.ALIGNMENT, sp.FileAlignmentInformation(), "alignment_requirement", 0),
    ]
    for info_class, structure, key, value in cases:
        data = fi.encode_file_info(info_class, s, o)
        assert len(data) == fi.FILE_INFO_MIN_SIZE[info_class]
        assert parse(structure, data)[key].get_value() == value, info_class  # type: ignore[index]


def test_all_information_with_name() -> None:
    s = filestat(is_directory=True, attributes=FileAttributes.DIRECTORY, end_of_file=0, allocation_size=0)
    o = OpenInfo(name="\\dir\\sub", access_flags=0x1F01FF, position=0, mode=0x20)
    data = fi.encode_file_info(FileInfoClass.ALL, s, o)
    assert len(data) == 100 + len("\\dir\\sub") * 2
    p = parse(sp.FileAllInformation(), data)
    assert p["basic_information"]["file_attributes"].get_value() == 0x10  # type: ignore[index]
    assert p["standard_information"]["directory"].get_value() is True  # type: ignore[index]
    assert p["internal_information"]["index_number"].get_value() == 0x1122334455  # type: ignore[index]
    assert p["access_information"]["access_flags"].get_value() == 0x1F01FF  # type: ignore[index]
    assert p["mode_information"]["mode"].get_value() == 0x20  # type: ignore[index]
    assert p["name_information"]["file_name"].get_value() == "\\dir\\sub"  # type: ignore[index]


@pytest.mark.parametrize(
    ("info_class", "name", "reported"),
    [
        (FileInfoClass.NAME, "\\a\\ü.txt", "\\a\\ü.txt"),
        (FileInfoClass.NAME, "\\", "\\"),
        (FileInfoClass.NORMALIZED_NAME, "\\a\\ü.txt", "a\\ü.txt"),
        (FileInfoClass.NORMALIZED_NAME, "\\", ""),
    ],
)
def test_name_information(info_class: int, name: str, reported: str) -> None:
    data = fi.encode_file_info(info_class, filestat(), OpenInfo(name=name))
    assert parse(sp.FileNameInformation(), data)["file_name"].get_value() == reported  # type: ignore[index]


def test_attribute_tag_and_network_open() -> None:
    s = filestat()
    p = parse(sp.FileAttributeTagInformation(), fi.encode_file_info(FileInfoClass.ATTRIBUTE_TAG, s))
    assert p["file_attributes"].get_value() == 0x22 and p["reparse_tag"].get_value() == 0  # type: ignore[index]
    data = fi.encode_file_info(FileInfoClass.NETWORK_OPEN, s)  # smbprotocol has no structure for it
    assert struct.unpack("<qqqqqqII", data) == (T0, T0 + 1000, T0 + 2000, T0 + 3000, 8192, 5000, 0x22, 0)


def test_stream_information() -> None:
    p = parse(sp.FileStreamInformation(), fi.encode_file_info(FileInfoClass.STREAM, filestat()))
    assert p["next_entry_offset"].get_value() == 0  # type: ignore[index]
    assert p["stream_name"].get_value() == "::$DATA"  # type: ignore[index]
    assert p["stream_size"].get_value() == 5000  # type: ignore[index]
    assert p["stream_allocation_size"].get_value() == 8192  # type: ignore[index]
    assert fi.encode_file_info(FileInfoClass.STREAM, filestat(is_directory=True)) == b""


@pytest.mark.parametrize(
    ("info_class", "status"),
    [
        (FileInfoClass.RENAME, NTStatus.INVALID_INFO_CLASS),  # set-only
        (FileInfoClass.DIRECTORY, NTStatus.INVALID_INFO_CLASS),  # enumeration-only
        (200, NTStatus.INVALID_INFO_CLASS),
        (FileInfoClass.PIPE, NTStatus.NOT_SUPPORTED),
        (FileInfoClass.FULL_EA, NTStatus.NOT_SUPPORTED),  # the caller answers it from the EAs
    ],
)
def test_unknown_query_class(info_class: int, status: int) -> None:
    with pytest.raises(InfoClassError) as err:
        fi.encode_file_info(info_class, filestat())
    assert err.value.status == status
    assert isinstance(err.value, RemoteProtocolError)


# -- file system information classes ----------------------------------------------------------

VOLUME = VolumeInfo(
    block_size=4096,
    total_blocks=1_000_000,
    free_blocks=400_000,
    available_blocks=350_000,
    label="data",
    serial_number=0xDEADBEEF,
    creation_time=T0,
    object_id=bytes(range(16)),
)


def test_fs_volume() -> None:
    data = fi.encode_fs_info(FsInfoClass.VOLUME, VOLUME)
    p = parse(sp.FileFsVolumeInformation(), data)
    assert filetime(p["volume_creation_time"].get_value()) == T0  # type: ignore[index]
    assert p["volume_serial_number"].get_value() == 0xDEADBEEF  # type: ignore[index]
    assert p["supports_objects"].get_value() is False  # type: ignore[index]
    assert p["volume_label"].get_value() == "data"  # type: ignore[index]
    assert len(data) == 18 + 8


def test_fs_sizes() -> None:
    p = parse(sp.FileFsFullSizeInformation(), fi.encode_fs_info(FsInfoClass.FULL_SIZE, VOLUME))
    assert p["total_allocation_units"].get_value() == 1_000_000  # type: ignore[index]
    assert p["caller_available_units"].get_value() == 350_000  # type: ignore[index]
    assert p["actual_available_units"].get_value() == 400_000  # type: ignore[index]
    assert p["sectors_per_unit"].get_value() == 8  # type: ignore[index]
    assert p["bytes_per_sector"].get_value() == 512  # type: ignore[index]
    size = fi.encode_fs_info(FsInfoClass.SIZE, VOLUME)
    assert struct.unpack("<qqII", size) == (1_000_000, 350_000, 8, 512)
    # An allocation unit not a multiple of 512 is one "sector".
    odd = VolumeInfo(block_size=1000, total_blocks=1, free_blocks=1, available_blocks=1)
    assert struct.unpack("<qqII", fi.encode_fs_info(FsInfoClass.SIZE, odd))[2:] == (1, 1000)


def test_fs_device_attribute_sector_objectid() -> None:
    assert struct.unpack("<II", fi.encode_fs_info(FsInfoClass.DEVICE, VOLUME)) == (7, 0x20)
    ro = VolumeInfo(block_size=4096, total_blocks=1, free_blocks=0, available_blocks=0, read_only=True)
    assert struct.unpack("<II", fi.encode_fs_info(FsInfoClass.DEVICE, ro)) == (7, 0x22)
    attr = fi.encode_fs_info(FsInfoClass.ATTRIBUTE, VOLUME)
    flags, max_name, name_len = struct.unpack_from("<III", attr)
    assert flags == 0x7 and max_name == 255 and attr[12:].decode("utf-16-le") == "NTFS" and name_len == 8
    ro_flags = struct.unpack_from("<I", fi.encode_fs_info(FsInfoClass.ATTRIBUTE, ro))[0]
    assert ro_flags & fi.FsAttributes.READ_ONLY_VOLUME
    sector = struct.unpack("<7I", fi.encode_fs_info(FsInfoClass.SECTOR_SIZE, VOLUME))
    assert sector == (512, 512, 512, 512, 3, 0, 0)
    p = parse(sp.FileFsObjectIdInformation(), fi.encode_fs_info(FsInfoClass.OBJECT_ID, VOLUME))
    assert p["object_id"].pack() == bytes(range(16))  # type: ignore[index]
    assert p["extended_info"].get_value() == bytes(48)  # type: ignore[index]
    # The minimums are what Windows and Samba demand of the client's buffer (smbtorture's
    # getinfo buffer checks); a labelled volume's answers reach them.
    for info_class, size in fi.FS_INFO_MIN_SIZE.items():
        assert len(fi.encode_fs_info(info_class, VolumeInfo(4096, 1, 1, 1, label="data"))) >= size


@pytest.mark.parametrize(
    ("info_class", "status"), [(FsInfoClass.LABEL, NTStatus.NOT_SUPPORTED), (99, NTStatus.INVALID_INFO_CLASS)]
)
def test_unknown_fs_class(info_class: int, status: int) -> None:
    with pytest.raises(InfoClassError) as err:
        fi.encode_fs_info(info_class, VOLUME)
    assert err.value.status == status


# -- directory enumeration -----------------------------------------------------------------------

SP_FIELDS = {
    "creation_time": "creation_time",
    "last_access_time": "last_access_time",
    "last_write_time": "last_write_time",
    "change_time": "change_time",
}
ENTRIES = [
    (".", filestat(is_directory=True, attributes=FileAttributes.DIRECTORY, end_of_file=0, allocation_size=0)),
    (
        "..",
        filestat(is_directory=True, attributes=FileAttributes.DIRECTORY, end_of_file=0, allocation_size=0),
    ),
    ("a.txt", filestat(file_index=11, end_of_file=1)),
    ("longer name with ü.bin", filestat(file_index=12, end_of_file=123456789)),
    ("z", filestat(file_index=13)),
]


@pytest.mark.parametrize("info_class", sorted(fi.DIRECTORY_CLASSES))
def test_directory_classes_against_smbprotocol(info_class: int) -> None:
    data, count = fi.encode_directory_entries(info_class, ENTRIES, 65536)
    assert count == len(ENTRIES)
    parsed = SMB2QueryDirectoryRequest.unpack_response(info_class, data)
    assert len(parsed) == len(ENTRIES)
    offsets = [e["next_entry_offset"].get_value() for e in parsed]
    assert offsets[-1] == 0 and all(o % 8 == 0 and o > 0 for o in offsets[:-1])
    for (name, s), p in zip(ENTRIES, parsed, strict=True):
        assert p["file_name"].get_value().decode("utf-16-le") == name
        if info_class == FileInfoClass.NAMES:
            continue
        for ours, theirs in SP_FIELDS.items():
            # smbprotocol's datetimes keep microseconds: compare at that precision.
            assert filetime(p[theirs].get_value()) == getattr(s, ours) // 10 * 10
        assert p["end_of_file"].get_value() == s.end_of_file
        assert p["allocation_size"].get_value() == s.allocation_size
        assert p["file_attributes"].get_value() == int(s.attributes)
        if info_class in (FileInfoClass.ID_BOTH_DIRECTORY, FileInfoClass.ID_FULL_DIRECTORY):
            assert p["file_id"].get_value() == s.file_index
        if info_class in (FileInfoClass.BOTH_DIRECTORY, FileInfoClass.ID_BOTH_DIRECTORY):
            short = "" if name in (".", "..") or fi.is_8dot3(name) else fi.short_name(name)
            length = p["short_name_length"].get_value()
            assert length == len(short) * 2
            assert p["short_name"].get_value()[:length].decode("utf-16-le") == short
    decoded = fi.decode_directory_entries(info_class, data)
    assert [d.name for d in decoded] == [n for n, _ in ENTRIES]


def test_directory_budget_and_single() -> None:
    full, _ = fi.encode_directory_entries(FileInfoClass.ID_BOTH_DIRECTORY, ENTRIES, 65536)
    first, n = fi.encode_directory_entries(FileInfoClass.ID_BOTH_DIRECTORY, ENTRIES, 65536, single=True)
    assert n == 1 and len(first) == 104 + 2 and struct.unpack_from("<I", first)[0] == 0
    # Exactly the room for the first three (the third unpadded): three; one byte less: two.
    three = fi.encode_directory_entries(FileInfoClass.ID_BOTH_DIRECTORY, ENTRIES[:3], 65536)[0]
    assert fi.encode_directory_entries(FileInfoClass.ID_BOTH_DIRECTORY, ENTRIES, len(three))[1] == 3
    data, n = fi.encode_directory_entries(FileInfoClass.ID_BOTH_DIRECTORY, ENTRIES, len(three) - 1)
    assert n == 2 and len(data) < len(three) - 1
    assert fi.encode_directory_entries(FileInfoClass.ID_BOTH_DIRECTORY, ENTRIES, 50) == (b"", 0)
    assert fi.encode_directory_entries(FileInfoClass.NAMES, [], 100) == (b"", 0)
    assert full[4 : len(first)] == first[4:]  # the same entry, but chained
    with pytest.raises(InfoClassError):
        fi.encode_directory_entries(FileInfoClass.BASIC, ENTRIES, 100)


names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    info_class=st.sampled_from(sorted(fi.DIRECTORY_CLASSES)),
    entry_names=st.lists(names, max_size=12),
    budget=st.integers(0, 2000),
    single=st.booleans(),
)
def test_directory_roundtrip(info_class: int, entry_names: list[str], budget: int, single: bool) -> None:
    entries = [(n, filestat(file_index=i)) for i, n in enumerate(entry_names)]
    data, count = fi.encode_directory_entries(info_class, entries, budget, single)
    assert len(data) <= budget
    assert count <= (1 if single else len(entries))
    if count:
        decoded = fi.decode_directory_entries(info_class, data)
        assert [d.name for d in decoded] == entry_names[:count]
        if info_class in (FileInfoClass.ID_BOTH_DIRECTORY, FileInfoClass.ID_FULL_DIRECTORY):
            assert [d.file_id for d in decoded] == list(range(count))
    if count < len(entries) and not single:
        # The next entry really did not fit.
        more, _ = fi.encode_directory_entries(info_class, entries[: count + 1], 1 << 20)
        assert len(more) > budget


@settings(max_examples=300)
@given(info_class=st.sampled_from(sorted(fi.DIRECTORY_CLASSES)), data=st.binary(max_size=400))
def test_directory_decoder_hostile(info_class: int, data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        fi.decode_directory_entries(info_class, data)


# -- SET_INFO decoders ---------------------------------------------------------------------------

i64 = st.integers(0, (1 << 63) - 1)
set_infos = st.one_of(
    st.builds(
        fi.BasicInformation,
        st.integers(-2, (1 << 63) - 1),
        st.integers(-2, (1 << 63) - 1),
        st.integers(-2, (1 << 63) - 1),
        st.integers(-2, (1 << 63) - 1),
        st.integers(0, 0xFFFFFFFF),
    ),
    st.builds(fi.EndOfFileInformation, i64),
    st.builds(fi.AllocationInformation, i64),
    st.builds(fi.DispositionInformation, st.booleans()),
    st.builds(fi.DispositionInformationEx, st.integers(0, 0xFFFFFFFF)),
    st.builds(
        fi.RenameInformation, st.booleans(), st.text(st.characters(exclude_categories=["Cs"]), min_size=1)
    ),
    st.builds(fi.PositionInformation, i64),
    st.builds(fi.ModeInformation, st.sampled_from([0, 2, 4, 6, 0x10, 0x20, 0x22, 0x36])),
)
SET_CLASS = {
    fi.BasicInformation: FileInfoClass.BASIC,
    fi.EndOfFileInformation: FileInfoClass.END_OF_FILE,
    fi.AllocationInformation: FileInfoClass.ALLOCATION,
    fi.DispositionInformation: FileInfoClass.DISPOSITION,
    fi.DispositionInformationEx: FileInfoClass.DISPOSITION_EX,
    fi.RenameInformation: FileInfoClass.RENAME,
    fi.PositionInformation: FileInfoClass.POSITION,
    fi.ModeInformation: FileInfoClass.MODE,
}


@settings(max_examples=300)
@given(info=set_infos, trailing=st.binary(max_size=8))
def test_set_info_roundtrip(info: fi.SetFileInfo, trailing: bytes) -> None:
    encoded = info.encode()
    assert fi.decode_set_file_info(SET_CLASS[type(info)], encoded + trailing) == info
    # One byte short of the fixed part: STATUS_INFO_LENGTH_MISMATCH.
    fixed = {fi.RenameInformation: 20, fi.BasicInformation: 40}.get(type(info), len(encoded))
    with pytest.raises(RemoteProtocolError) as err:
        fi.decode_set_file_info(SET_CLASS[type(info)], encoded[: fixed - 1])
    assert err.value.status == NTStatus.INFO_LENGTH_MISMATCH


@settings(max_examples=500)
@given(info_class=st.sampled_from(sorted(SET_CLASS.values())), data=st.binary(max_size=80))
def test_set_info_hostile(info_class: int, data: bytes) -> None:
    status = None
    try:
        fi.decode_set_file_info(info_class, data)
    except RemoteProtocolError as exc:
        status = exc.status
    assert status in (
        None,
        NTStatus.INFO_LENGTH_MISMATCH,
        NTStatus.INVALID_PARAMETER,
        NTStatus.OBJECT_NAME_INVALID,
    )


def test_set_info_from_smbprotocol() -> None:
    rename = sp.FileRenameInformation()
    rename["replace_if_exists"] = True
    rename["file_name"] = "dir\\new name.txt".encode("utf-16-le")
    assert fi.decode_set_file_info(FileInfoClass.RENAME, rename.pack()) == fi.RenameInformation(
        True, "dir\\new name.txt"
    )
    basic = sp.FileBasicInformation()
    basic["last_write_time"] = T0
    basic["file_attributes"] = 0x1
    assert fi.decode_set_file_info(FileInfoClass.BASIC, basic.pack()) == fi.BasicInformation(0, 0, T0, 0, 1)
    eof = sp.FileEndOfFileInformation()
    eof["end_of_file"] = 12345
    assert fi.decode_set_file_info(FileInfoClass.END_OF_FILE, eof.pack()) == fi.EndOfFileInformation(12345)
    disp = sp.FileDispositionInformation()
    disp["delete_pending"] = True
    assert fi.decode_set_file_info(FileInfoClass.DISPOSITION, disp.pack()) == fi.DispositionInformation(True)
    pos = sp.FilePositionInformation()
    pos["current_byte_offset"] = 99
    assert fi.decode_set_file_info(FileInfoClass.POSITION, pos.pack()) == fi.PositionInformation(99)


@pytest.mark.parametrize(
    ("info_class", "data", "status"),
    [
        (FileInfoClass.END_OF_FILE, struct.pack("<q", -1), NTStatus.INVALID_PARAMETER),
        (FileInfoClass.ALLOCATION, struct.pack("<q", -5), NTStatus.INVALID_PARAMETER),
        (FileInfoClass.POSITION, struct.pack("<q", -1), NTStatus.INVALID_PARAMETER),
        (FileInfoClass.MODE, struct.pack("<I", 0x1000), NTStatus.INVALID_PARAMETER),
        (FileInfoClass.BASIC, struct.pack("<qqqqII", -3, 0, 0, 0, 0, 0), NTStatus.INVALID_PARAMETER),
        (FileInfoClass.RENAME, bytes(20), NTStatus.INVALID_PARAMETER),  # empty name
        (FileInfoClass.RENAME, bytes(16) + struct.pack("<I", 10) + b"ab", NTStatus.INVALID_PARAMETER),
        (FileInfoClass.RENAME, bytes(16) + struct.pack("<I", 3) + b"abc", NTStatus.INVALID_PARAMETER),  # odd
        (
            FileInfoClass.RENAME,
            bytes(8) + b"\x01" + bytes(7) + struct.pack("<I", 2) + b"a\0",
            NTStatus.INVALID_PARAMETER,
        ),
        (FileInfoClass.RENAME, bytes(16) + struct.pack("<I", 2) + b"\x00\xd8", NTStatus.OBJECT_NAME_INVALID),
        (FileInfoClass.DISPOSITION, b"", NTStatus.INFO_LENGTH_MISMATCH),
        (FileInfoClass.LINK, bytes(40), NTStatus.NOT_SUPPORTED),
        (FileInfoClass.STANDARD, bytes(40), NTStatus.INVALID_INFO_CLASS),
        (250, bytes(40), NTStatus.INVALID_INFO_CLASS),
    ],
)
def test_set_info_refusals(info_class: int, data: bytes, status: int) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        fi.decode_set_file_info(info_class, data)
    assert err.value.status == status


def test_basic_information_time_meanings() -> None:
    info = fi.BasicInformation(0, -1, -2, T0, 0)
    assert [info.new_time(t) for t in (0, -1, -2, T0)] == [None, None, None, T0]
    assert fi.DispositionInformation.decode(b"\x02").delete_pending is True
    assert fi.DispositionInformationEx(0x9).delete and not fi.DispositionInformationEx(0x8).delete


# -- EAs, compression, short names, FileFsControlInformation -------------------------------------

# Two EAs as FILE_FULL_EA_INFORMATION ([MS-FSCC] 2.4.15), laid out by hand: each entry on a
# 4-byte boundary, the name NUL-terminated, the last NextEntryOffset 0.
GOLDEN_EAS = bytes.fromhex(
    "14000000 00 05 0600"
    + b"EAONE\x00VALUE1".hex()  # 8 + 6 + 6 = 20: aligned already
    + "00000000 80 08 0800"
    + b"SECONDEA\x00ValueTwo".hex()
)


def test_full_ea_golden_bytes() -> None:
    eas = [fi.FullEa("EAONE", b"VALUE1"), fi.FullEa("SECONDEA", b"ValueTwo", fi.FILE_NEED_EA)]
    assert fi.encode_full_ea(eas) == (GOLDEN_EAS, 2)
    assert fi.decode_full_ea(GOLDEN_EAS) == eas
    assert fi.ea_size(eas) == len(GOLDEN_EAS)
    assert fi.encode_full_ea(eas, 20) == (bytes(4) + GOLDEN_EAS[4:20], 1)  # the last entry ends the list
    lower = bytearray(GOLDEN_EAS)
    lower[8:13] = b"eaone"
    assert fi.decode_full_ea(bytes(lower))[0].name == "EAONE"  # EA names are kept upper-cased


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (GOLDEN_EAS[:7], NTStatus.INFO_LENGTH_MISMATCH),
        (GOLDEN_EAS[:12], NTStatus.INVALID_PARAMETER),  # value past the end
        (GOLDEN_EAS[:13] + b"X" + GOLDEN_EAS[14:], fi.STATUS_INVALID_EA_NAME),  # no NUL after the name
        (bytes.fromhex("00000000 00 03 0100") + b"a*b\x00v", fi.STATUS_INVALID_EA_NAME),
        (bytes.fromhex("00000000 00 00 0100") + b"\x00v", fi.STATUS_INVALID_EA_NAME),  # empty name
        (bytes.fromhex("04000000 00 01 0000") + b"a\x00", NTStatus.INVALID_PARAMETER),  # overlapping
    ],
)
def test_full_ea_malformed(data: bytes, status: int) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        fi.decode_full_ea(data)
    assert err.value.status == status


ea_names = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E).filter(lambda c: c not in '"*+,/:;<=>?[\\]|'),
    min_size=1,
    max_size=20,
).map(str.upper)


@given(
    st.lists(st.builds(fi.FullEa, ea_names, st.binary(max_size=40), st.sampled_from([0, 0x80])), min_size=1)
)
def test_full_ea_round_trip(eas: list[fi.FullEa]) -> None:
    data, count = fi.encode_full_ea(eas)
    assert count == len(eas) and fi.decode_full_ea(data) == eas
    assert fi.FullEaInformation.decode(fi.FullEaInformation(tuple(eas)).encode()).eas == tuple(eas)


@given(st.binary(max_size=120))
def test_full_ea_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        fi.decode_full_ea(data)


@pytest.mark.parametrize(
    ("name", "is_83"),
    [("A.TXT", True), ("readme.txt", True), ("12345678.123", True), ("z", True), ("123456789", False),
     ("a.b.c", False), ("a.text", False), ("with space", False), (".hidden", False), ("ü.txt", False)],
)  # fmt: skip
def test_short_names(name: str, is_83: bool) -> None:
    assert fi.is_8dot3(name) is is_83
    short = fi.short_name(name)
    assert fi.is_8dot3(short)
    assert (short == name) is is_83
    if not is_83:
        assert "~" in short and short == fi.short_name(name)  # stable
    assert fi.short_name("a long name.text").startswith("ALON~") and fi.short_name("x.html").endswith(".HTM")


def test_compression_alternate_name_and_fs_control() -> None:
    st_ = filestat(end_of_file=5000)
    assert fi.encode_file_info(FileInfoClass.COMPRESSION, st_) == struct.pack("<q", 5000) + bytes(8)
    alt = fi.encode_file_info(FileInfoClass.ALTERNATE_NAME, st_, OpenInfo("\\dir\\a long name.text"))
    assert alt == fi.encode_name(fi.short_name("a long name.text"))
    with pytest.raises(RemoteProtocolError) as err:
        fi.encode_file_info(FileInfoClass.ALTERNATE_NAME, st_, OpenInfo("\\"))
    assert err.value.status == NTStatus.OBJECT_NAME_NOT_FOUND
    control = fi.encode_fs_info(FsInfoClass.CONTROL, VolumeInfo(4096, 10, 5, 5))
    assert control == bytes(24) + b"\xff" * 16 + bytes(8)
    assert fi.FS_INFO_MIN_SIZE[FsInfoClass.CONTROL] == 48 == len(control)
