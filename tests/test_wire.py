"""The wire format accepts what agents send and refuses what would corrupt the store."""

import uuid

import msgspec
import pytest

from smartmon import wire


def decode(**fields: object) -> wire.Report:
    body = {
        "reportId": str(uuid.uuid4()),
        "seq": 1,
        "collectedAt": "2026-12-04T20:00:00Z",
        "intervalS": 10,
    }
    body.update(fields)
    return wire.decode_report(msgspec.json.encode(body))


def test_report_id_spellings_of_one_uuid_are_one_id() -> None:
    rid = uuid.uuid4()
    spellings = [str(rid), rid.hex, str(rid).upper()]
    assert {decode(reportId=s).report_id for s in spellings} == {str(rid)}


@pytest.mark.parametrize("rid", ["-" * 36, "x" * 32, str(uuid.uuid4()) + "\n", ""])
def test_report_ids_that_are_not_uuids_are_refused(rid: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="reportId"):
        decode(reportId=rid)


def test_collected_at_needs_a_timezone() -> None:
    with pytest.raises(msgspec.ValidationError, match="timezone"):
        decode(collectedAt="2026-12-04T20:00:00")
    assert (
        decode(collectedAt="2026-12-04T21:00:00+01:00").collected_at.timestamp()
        == decode().collected_at.timestamp()
    )


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("*", "0.0.0.0"), ("[::]", "::"), ("127.0.0.53%lo", "127.0.0.53"), ("::ffff:10.0.0.1", "10.0.0.1"),
     ("FE80::1%eth0", "fe80::1")],
)  # fmt: skip
def test_addresses_as_ss_prints_them_are_normalised(given: str, canonical: str) -> None:
    assert wire.normalise_ip(given) == canonical


def test_any_remote_of_an_ipv6_socket_stays_ipv6() -> None:
    c = wire.Connection(
        protocol="UDP", source_ip="::", source_port=5353, dest_ip="*", dest_port=0, state="unconn"
    )
    assert (c.dest_ip, c.family, c.state) == ("::", 6, "UNCONN")


@pytest.mark.parametrize(
    "bad",
    [
        {"sourceIp": "10.0.0.300"},
        {"state": "FLYING"},
        {"protocol": "ICMP"},
        {"destPort": -1},
        {"bytesIn": -5},
    ],
)
def test_bad_connections_name_their_field(bad: dict[str, object]) -> None:
    c = {"protocol": "TCP", "sourceIp": "10.0.0.1", "sourcePort": 1, "destIp": "10.0.0.2", "destPort": 2,
         "state": "ESTABLISHED"} | bad  # fmt: skip
    with pytest.raises(msgspec.ValidationError, match=r"connections\[0\]"):
        decode(connections=[c])
