"""drsdtp.api.auth on its own: the role table, twin scopes, identification by token, certificate and
anonymity, the per-caller token bucket, the audit of refusals, and the config rules around them."""

from __future__ import annotations

from typing import Any

import pytest

from drsdtp.api.auth import Access, Authority, Credentials, Decision, access_of, bearer_of
from drsdtp.api.auth.ratelimit import AuditBudget, RateLimiter
from drsdtp.api.auth.roles import METHOD_ROLES, ROLES, required_role
from drsdtp.api.auth.scopes import scope_filter
from drsdtp.api.auth.tokens import hash_token, new_token
from drsdtp.api.caller import Caller
from drsdtp.api.server import SERVICE
from drsdtp.config import ApiConfig, ApiTokenConfig, check_exposure, parse_config
from drsdtp.errors import ConfigError
from drsdtp.wire.v1 import api_pb2

VIEWER, OPERATOR = new_token(), new_token()


def authority(**settings: Any) -> Authority:
    tokens = (
        ApiTokenConfig("grafana", "viewer", hash_token(VIEWER)),
        ApiTokenConfig("mes", "operator", hash_token(OPERATOR), scopes=("line1/*", "oven-7")),
    )
    return Authority(ApiConfig(tokens=tokens, **settings))


async def who(auth: Authority, token: str | None = None, names: frozenset[str] = frozenset()) -> Caller:
    found = await auth.identify(Credentials("ipv4:10.0.0.5:51234", names, token and f"Bearer {token}"))
    assert isinstance(found, Caller), found
    return found


def test_the_role_table_names_methods_of_the_service() -> None:
    # A method missing from the table is admitted for admins only (a new method is never open by mistake).
    assert {m.split(".")[0] for m in METHOD_ROLES} <= {m.name for m in SERVICE.methods}
    assert set(METHOD_ROLES.values()) <= set(ROLES)
    assert required_role("SomeMethodAddedLater") == "admin"


async def test_a_viewer_token_reads_and_is_refused_a_write_naming_the_role() -> None:
    auth = authority()
    viewer = await who(auth, VIEWER)
    assert (viewer.identity, viewer.authenticated, viewer.role) == ("token:grafana", True, "viewer")
    assert auth.authorize(viewer, "GetTwin", ["line1/press"]).allowed
    refused = auth.authorize(viewer, "Write", ["line1/press"])
    assert refused.status == "permission_denied" and refused.kind == "method"
    assert refused.reason == "token:grafana (role viewer) may not call Write: it needs the role operator"
    assert refused.http_status == 403


async def test_an_operator_writes_values_but_creating_twins_needs_an_engineer() -> None:
    auth = authority()
    operator = await who(auth, OPERATOR)
    write = api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="line1/press")])
    assert auth.check(operator, access_of("Write", write)).allowed
    create = api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="line1/new", create=api_pb2.CreateTwin())])
    assert access_of("Write", create).methods == ("Write", "Write.create")
    refused = auth.check(operator, access_of("Write", create))
    assert not refused.allowed and "a Write that creates twins: it needs the role engineer" in refused.reason


async def test_scopes_cover_twins_and_listings_are_left_to_the_methods() -> None:
    auth = authority()
    mes = await who(auth, OPERATOR)
    assert auth.authorize(mes, "GetTwin", ["line1/press"]).allowed
    assert auth.authorize(mes, "GetTwin", ["oven-7"]).allowed
    outside = auth.authorize(mes, "GetTwin", ["oven-70"])
    assert outside.status == "permission_denied" and outside.kind == "scope"
    assert outside.reason == "the twin 'oven-70' is outside the scopes of token:mes (line1/*, oven-7)"
    assert outside.twin == "oven-70"  # what the audit record names
    # A listing names no twin: allowed by role, its answer cut to the scopes by the method.
    assert access_of("ListTwins", api_pb2.ListTwinsRequest()) == Access(("ListTwins",))
    assert auth.check(mes, access_of("Watch", api_pb2.WatchRequest())).allowed
    # A Watch of listed twins is checked twin by twin.
    assert access_of("Watch", api_pb2.WatchRequest(twin_ids=["a", "b"], prefix="a")).twins == ("a", "b")
    columns = api_pb2.WriteRequest(columns=api_pb2.NumericColumns(twin_ids=["line1/a", "line2/b"]))
    assert not auth.check(mes, access_of("Write", columns)).allowed


def test_scope_filters_match_ids_and_prefixes() -> None:
    assert scope_filter(("line1/*", "*")) is None  # every twin: nothing to filter
    within = scope_filter(("line1/*", "oven-7"))
    assert within is not None
    assert [t for t in ("line1/a", "line10", "oven-7", "oven-70", "line2/a") if within(t)] == [
        "line1/a",
        "oven-7",
    ]


class Records:
    def alarm_twin(self, alarm_id: str) -> str | None:
        return {"al-1": "line2/press"}.get(alarm_id)

    def command_twin(self, command_id: str) -> str | None:
        return {"c-1": "line2/press"}.get(command_id)


async def test_every_request_naming_a_twin_or_its_record_is_checked_against_the_scopes() -> None:
    auth = Authority(ApiConfig(), records=Records())
    mes = Caller("token:eng", True, "engineer", ("line1/*",))
    edge = api_pb2.RelationEdge(twin_id="line1/a", relation="feeds", target="line2/b")
    named = {
        "AcknowledgeAlarm": (api_pb2.AcknowledgeAlarmRequest(alarm_id="al-1"), "line2/press"),
        "GetCommand": (api_pb2.CommandGetRequest(command_id="c-1"), "line2/press"),
        "CancelCommand": (api_pb2.CommandCancelRequest(command_id="c-1"), "line2/press"),
        "WaitCommand": (api_pb2.CommandWaitRequest(command_id="c-1"), "line2/press"),
        "Query": (api_pb2.QueryRequest(under="line2"), "line2"),
        "Relate": (api_pb2.RelateRequest(add=[edge]), "line2/b"),
        "Health": (api_pb2.HealthRequest(twin_ids=["line1/a", "line3"]), "line3"),
        "ListAlarms": (api_pb2.ListAlarmsRequest(twin_id="line2/x"), "line2/x"),
    }
    for method, (request, twin) in named.items():
        refused = auth.check(mes, auth.access(method, request))
        assert refused.kind == "scope" and refused.twin == twin, (method, refused)
    # A record this node does not hold names no twin: the method answers NOT_FOUND for it.
    assert auth.access("GetCommand", api_pb2.CommandGetRequest(command_id="nope")).twins == ()


async def test_unknown_and_malformed_credentials_are_unauthenticated() -> None:
    auth = authority()
    for header, says in (
        ("Bearer drsdtp_not-a-token", "not one of this node's api.tokens"),
        ("Basic dXNlcjpwYXNz", "not of the form 'Bearer <token>'"),
        (None, "no credentials"),
    ):
        got = await auth.identify(Credentials("ipv4:127.0.0.1:5", authorization=header))
        assert isinstance(got, Decision) and got.status == "unauthenticated" and says in got.reason
        assert got.http_status == 401
    assert bearer_of("bearer  abc ") == "abc"


async def test_anonymous_callers_are_admins_only_while_nothing_is_configured() -> None:
    open_node = Authority(ApiConfig())
    anyone = await who(open_node)
    assert (anyone.identity, anyone.authenticated, anyone.role) == ("ipv4:10.0.0.5", False, "admin")
    viewers = Authority(ApiConfig(anonymous_role="viewer", tokens=authority().config.tokens))
    assert (await who(viewers)).role == "viewer"


async def test_certificates_map_to_roles() -> None:
    from drsdtp.config import ApiCertificateConfig

    auth = Authority(
        ApiConfig(certificates=(ApiCertificateConfig("hmi-3", "viewer"),), certificate_role="operator")
    )
    hmi = await who(auth, names=frozenset({"hmi-3", "hmi-3.plant"}))
    assert (hmi.identity, hmi.role) == ("tls:hmi-3,hmi-3.plant", "viewer")
    assert (await who(auth, names=frozenset({"scada"}))).role == "operator"


def test_the_token_bucket_refills_at_its_rate_and_bounds_its_callers() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3.0, max_callers=2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    now[0] = 0.5  # one token back
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    assert limiter.take("b") == 0.0 and limiter.take("c") == 0.0
    assert len(limiter) == 2  # "a", least recently seen, went
    assert limiter.take("x", rate=0) == 0.0  # 0: unlimited


async def test_a_caller_over_its_rate_is_refused_and_counted() -> None:
    auth = authority(rate_per_s=0.001, rate_burst=2)
    viewer = await who(auth, VIEWER)
    assert auth.authorize(viewer, "Status").allowed and auth.authorize(viewer, "Status").allowed
    over = auth.authorize(viewer, "Status")
    assert over.status == "resource_exhausted" and over.http_status == 429
    assert "token:grafana is over its rate limit (0.001 requests/s)" in over.reason
    assert auth.authorize(await who(auth, OPERATOR), "Status").allowed  # another caller, its own bucket
    await auth.refused(viewer.identity, "Status", over)
    assert auth.refusals[("rate",)] == 1


async def test_refusals_are_audited_at_a_bounded_rate_per_caller() -> None:
    records: list[tuple[str, str, str, str]] = []

    async def sink(actor: str, method: str, twin: str, reason: str) -> None:
        records.append((actor, method, twin, reason))

    auth = Authority(ApiConfig(), audit=sink)
    no = Decision("permission_denied", "token:x (role viewer) may not call Write", "method")
    for _ in range(100):
        await auth.refused("token:x", "Write", no, ["t1"])
    assert 20 <= len(records) < 30  # the burst, then about one a second
    assert records[0] == ("token:x", "Write", "t1", f"refused Write (permission_denied): {no.reason}")
    assert auth.refusals[("method",)] == 100


def test_the_audit_budget_counts_what_it_holds_back_and_says_it_in_the_next_record() -> None:
    now = [0.0]
    budget = AuditBudget(1.0, 2.0, max_callers=2, clock=lambda: now[0])
    assert [budget.admit("a"), budget.admit("a", 5), budget.admit("a", 3)] == ["", "", None]
    assert budget.admit("a") is None  # 4 held back so far, still within the second
    now[0] += 1.0
    assert budget.admit("a") == " (and 4 earlier refusals of this caller, not recorded one by one)"
    assert budget.admit("b") == ""  # another caller, its own bucket
    now[0] += 1.0
    assert budget.admit("a") == ""  # said once, then forgotten


async def test_the_guard_audits_refusals_from_the_budget_it_shares() -> None:
    """The server hands ``Authority.audit_budget`` to the command service, so a caller refused in single
    calls and in batches is held to one rate, not one each: what the budget spent elsewhere is gone here."""
    records: list[str] = []

    async def sink(actor: str, method: str, twin: str, reason: str) -> None:
        records.append(reason)

    auth = Authority(ApiConfig(), audit=sink)
    no = Decision("permission_denied", "token:x (role viewer) may not call Write", "method")
    for _ in range(20):  # the whole burst, spent as a batch's refusals would
        assert auth.audit_budget.admit("token:x") is not None
    await auth.refused("token:x", "Write", no, ["t1"])
    assert records == []


def test_token_config_is_checked() -> None:
    base = {"node_id": "n", "data_dir": "/tmp/x"}
    good = {"name": "a", "role": "viewer", "hash": hash_token("t")}
    config = parse_config({**base, "api": {"tokens": [good]}})
    assert config.api.tokens[0].scopes == ("*",)
    for bad, key, says in (
        ({**good, "hash": "t"}, "api.tokens[0].hash", "sha256:"),
        ({**good, "role": "root"}, "api.tokens[0].role", "expected one of"),
        ({**good, "scopes": ["a*b"]}, "api.tokens[0].scopes[0]", "is not a scope"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "api": {"tokens": [bad]}})
        assert info.value.key == key and says in info.value.reason
    with pytest.raises(ConfigError, match=r"the same token as api\.tokens"):
        parse_config({**base, "api": {"tokens": [good, {**good, "name": "b"}]}})


def test_a_plaintext_api_off_loopback_needs_tokens_or_an_explicit_allowance() -> None:
    base = {"node_id": "n", "data_dir": "/tmp/x"}
    assert check_exposure(parse_config(base)) == []  # 127.0.0.1 by default
    remote = {**base, "listen": {"api": "0.0.0.0:7401"}}
    (problem,) = check_exposure(parse_config(remote))
    assert problem.key == "listen.api" and "0.0.0.0 is not a loopback address" in str(problem)
    assert check_exposure(parse_config({**remote, "api": {"allow_plaintext_remote": True}})) == []
    token = {"name": "a", "role": "viewer", "hash": hash_token("t")}
    assert check_exposure(parse_config({**remote, "api": {"tokens": [token]}})) == []
    assert check_exposure(parse_config({**base, "listen": {"api": "[::1]:7401"}})) == []


def test_access_of_methods_without_twins_is_the_method_alone() -> None:
    assert access_of("Status", api_pb2.StatusRequest()) == Access(("Status",))
    assert access_of("ReadAudit", api_pb2.AuditRequest()) == Access(("ReadAudit",))


def test_an_anomaly_shows_only_the_related_twins_in_the_callers_scopes() -> None:
    from drsdtp.api.services.intel import anomaly_message
    from drsdtp.intelligence.anomalies import AnomalyRecord
    from drsdtp.intelligence.results import AnomalyEvent, Severity

    event = AnomalyEvent("line1/a", "temp", "spike", Severity.HIGH, 1.0, 20.0, "spike", "spike", 1.0, 0.9)
    record = AnomalyRecord(1, 0, "pump", event, related=("line1/b", "line2/c"))
    assert list(anomaly_message(record).related) == ["line1/b", "line2/c"]
    assert list(anomaly_message(record, scope_filter(("line1/*",))).related) == ["line1/b"]
