"""The live server fixture works: register, enroll, report, read back."""

import uuid

from tests.conftest import LiveServer


def test_report_round_trip(live_server: LiveServer) -> None:
    device_id, key = live_server.enroll("meter-1")
    report = {
        "reportId": str(uuid.uuid4()), "seq": 1, "collectedAt": "2026-12-04T20:00:00Z", "intervalS": 10,
        "connections": [{"protocol": "TCP", "sourceIp": "10.0.0.2", "sourcePort": 40000,
                         "destIp": "192.0.2.1", "destPort": 443, "state": "ESTABLISHED"}],
    }  # fmt: skip
    r = live_server.request("POST", "/api/monitor/connections", key, json=report)
    assert r.status_code == 200 and r.json()["duplicate"] is False
    detail = live_server.request(
        "GET", f"/api/dashboard/user/{device_id}", live_server.admin_token
    ).json()
    assert [c["destIp"] for c in detail["data"]["connections"]] == ["192.0.2.1"]
