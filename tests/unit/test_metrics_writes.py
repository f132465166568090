"""How /metrics cuts a prepared body into writes: few writes, and no copy of a large part."""

from __future__ import annotations

from exporter.web.metrics import JOIN_BYTES, WRITE_CHUNK_BYTES, write_chunks


def test_small_parts_are_joined_up_to_the_join_size() -> None:
    third = JOIN_BYTES // 3
    parts = [bytes([n]) * third for n in range(10)]
    chunks = list(write_chunks(parts))
    assert [len(chunk) for chunk in chunks] == [3 * third] * 3 + [third]
    assert b"".join(chunks) == b"".join(parts)


def test_a_large_part_goes_out_in_slices_of_itself() -> None:
    big = bytes(range(256)) * (WRITE_CHUNK_BYTES // 256 * 2 + 10)  # two slices and a bit
    parts = [b"head", big, b"tail"]
    chunks = list(write_chunks(parts))
    assert [len(chunk) for chunk in chunks] == [4, WRITE_CHUNK_BYTES, WRITE_CHUNK_BYTES, 2560, 4]
    slices = [chunk for chunk in chunks if isinstance(chunk, memoryview)]
    assert len(slices) == 3
    assert all(chunk.obj is big for chunk in slices)  # views, not copies
    assert b"".join(chunks) == b"".join(parts)


def test_nothing_gives_no_write() -> None:
    assert list(write_chunks([])) == []
