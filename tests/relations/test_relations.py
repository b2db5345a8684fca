"""Relations as replicated state: the edge set, the local index (no lag, cycles), queries, corroboration."""

from __future__ import annotations

import pytest

from drsdtp._core import Store
from drsdtp.api.feed import ChangeFeed
from drsdtp.errors import InvalidValueError
from drsdtp.intelligence.results import AnomalyEvent, Severity
from drsdtp.relations.corroborate import PROCESS, SENSOR, corroborate
from drsdtp.relations.edges import EDGES_FIELD, Edge, check_edge, decode, encode
from drsdtp.relations.index import RelationIndex
from drsdtp.relations.query import QuerySpec, parse_condition, run_query


class Twins:
    """A real store and change feed, written the way the node writes (every write published)."""

    def __init__(self, replica: int = 1) -> None:
        self.store = Store(replica)
        self.feed = ChangeFeed()
        self.index = RelationIndex(self.store, self.feed.read)

    def relate(self, twin: str, relation: str, target: str) -> bytes:
        delta = self.store.add(twin, EDGES_FIELD, encode(Edge(twin, relation, target)))
        self.feed.publish([twin], "local")
        return delta

    def unrelate(self, twin: str, relation: str, target: str) -> None:
        self.store.remove(twin, EDGES_FIELD, encode(Edge(twin, relation, target)))
        self.feed.publish([twin], "local")

    def set(self, twin: str, **values: float | str) -> None:
        self.store.set_many(twin, dict(values))
        self.feed.publish([twin], "local")


def plant() -> Twins:
    t = Twins()
    for child, parent in (
        ("site/hall-1", "site"),
        ("site/hall-1/line-1", "site/hall-1"),
        ("site/hall-1/line-2", "site/hall-1"),
        ("pump-1", "site/hall-1/line-1"),
        ("tank-1", "site/hall-1/line-1"),
        ("pump-2", "site/hall-1/line-2"),
        ("pump-1/temp", "pump-1"),
    ):
        t.relate(child, "located_in", parent)
    t.relate("pump-1", "feeds", "tank-1")
    t.relate("motor-1", "powers", "pump-1")
    t.set("pump-1", temp=45.0, mode="auto")
    t.set("pump-2", temp=30.0, mode="auto")
    t.set("tank-1", temp=41.0, level=3.0)
    return t


def test_the_tree_and_the_neighbours_are_read_with_no_lag() -> None:
    t = plant()
    t.index.refresh()
    assert t.index.ancestors("pump-1/temp") == ["pump-1", "site/hall-1/line-1", "site/hall-1", "site"]
    assert t.index.descendants("site/hall-1/line-1") == ["pump-1", "tank-1", "pump-1/temp"]
    assert t.index.neighbours("pump-1") == [
        "motor-1",
        "pump-1/temp",
        "site/hall-1/line-1",
        "tank-1",
    ]
    assert t.index.neighbours("pump-1", "feeds") == ["tank-1"]
    assert t.index.siblings("pump-1") == ["tank-1"]
    assert t.index.affected("pump-1") == ("tank-1", "pump-1/temp")
    # a change is seen by the next read, with nothing else to wait for
    t.unrelate("pump-1", "feeds", "tank-1")
    t.relate("pump-1", "feeds", "pump-2")
    t.index.refresh()
    assert t.index.neighbours("pump-1", "feeds") == ["pump-2"]
    assert t.index.incoming("tank-1") == []


def test_a_cycle_in_the_tree_ends_the_walk() -> None:
    t = Twins()
    t.relate("a", "located_in", "b")
    t.relate("b", "located_in", "a")
    t.index.refresh()
    assert t.index.ancestors("a") == ["b"] and t.index.descendants("a") == ["b"]


def test_edges_replicate_and_merge_as_a_set() -> None:
    a, b = Twins(1), Twins(2)
    b.store.merge(a.relate("pump-1", "feeds", "tank-1"))
    b.feed.publish(["pump-1"], "peer")
    b.store.merge(b.store.add("pump-1", EDGES_FIELD, encode(Edge("pump-1", "feeds", "tank-2"))))
    b.index.refresh()
    assert b.index.neighbours("pump-1", "feeds") == ["tank-1", "tank-2"]


def test_bad_edges_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(InvalidValueError, match="relation: 'no such' is not a relation name"):
        check_edge(Edge("a", "no such", "b"))
    with pytest.raises(InvalidValueError, match="cannot relate to itself"):
        check_edge(Edge("a", "feeds", "a"))
    with pytest.raises(InvalidValueError, match="internal"):
        check_edge(Edge("a", "feeds", "_cmd/x"))
    assert decode("a", "no-colon") is None and decode("a", "feeds:b") == Edge("a", "feeds", "b")
    assert decode("a", "feeds:site/x:y") == Edge("a", "feeds", "site/x:y")


def health(twins: object) -> dict[str, tuple[str, str]]:
    return {"pump-1": ("pump", "DEGRADED"), "pump-2": ("pump", "HEALTHY"), "tank-1": ("tank", "HEALTHY")}


def query(t: Twins, **kw: object) -> list[str]:
    hits, total = run_query(QuerySpec(**kw), t.index, t.store.get, t.store.twins, health)  # type: ignore[arg-type]
    assert total >= len(hits)
    return [h.twin for h in hits]


def test_queries_by_position_relation_values_and_health() -> None:
    t = plant()
    hot = (parse_condition("temp > 40"),)
    assert query(t, under="site/hall-1", where=hot) == ["pump-1", "tank-1"]
    assert query(t, under="site/hall-1", relation="feeds", where=hot) == ["pump-1"]
    assert query(t, under="site/hall-1", where=hot, health=("DEGRADED",)) == ["pump-1"]
    assert query(t, related="pump-1", relation="powers") == ["motor-1"]
    assert query(t, above="pump-1") == ["site/hall-1/line-1", "site/hall-1", "site"]
    assert query(t, where=(parse_condition("mode == auto"),)) == ["pump-1", "pump-2"]
    assert query(t, where=(parse_condition("level <= 3"), parse_condition("temp != 41"))) == []
    hits, _ = run_query(
        QuerySpec(under="site", where=hot, limit=1), t.index, t.store.get, t.store.twins, health
    )
    assert len(hits) == 1 and hits[0].values == {"temp": 45.0} and hits[0].health == "DEGRADED"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("temp >", "expected '<field> <op> <value>'"),
        ("temp ~ 3", "expected '<field> <op> <value>'"),
        ("mode > auto", "> needs a number"),
        ("temp > nan", "finite number"),
    ],
)
def test_a_bad_condition_is_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidValueError, match=message):
        parse_condition(text)


def test_a_bad_query_is_refused() -> None:
    with pytest.raises(InvalidValueError, match="at most one of under, above, related"):
        QuerySpec(under="a", above="b")
    with pytest.raises(InvalidValueError, match="'SICK' is not one of"):
        QuerySpec(health=("SICK",))


def event(twin: str, t_s: float, field: str = "temp") -> AnomalyEvent:
    return AnomalyEvent(twin, field, "level_shift", Severity.HIGH, t_s, 1.0, "shift", "shift", 9.0, 0.99)


def test_related_sensors_tell_a_process_change_from_a_failing_sensor() -> None:
    peers = {"r1": ["r2", "r3"], "r2": ["r1", "r3"], "r3": ["r1", "r2"], "lone": ["r1"]}
    fields = {"r1": {"temp"}, "r2": {"temp"}, "r3": {"temp"}, "lone": {"flow"}}

    def judge(
        events: list[AnomalyEvent], earlier: dict[str, list[float]]
    ) -> list[tuple[str, tuple[str, ...]]]:
        verdicts = corroborate(
            events,
            peers.__getitem__,
            lambda twin, field: field in fields[twin],
            lambda twin, field: earlier.get(twin, []),
            600.0,
        )
        return [(v.cause, v.evidence) for v in verdicts]

    # the whole line shifts: each sensor is confirmed by the others
    both = judge([event("r1", 1000.0), event("r2", 1010.0)], {})
    assert both == [(PROCESS, ("r2",)), (PROCESS, ("r1",))]
    # an earlier event of a peer counts too, within the window only
    assert judge([event("r3", 1500.0)], {"r1": [1000.0]}) == [(PROCESS, ("r1",))]
    assert judge([event("r3", 5000.0)], {"r1": [1000.0]}) == [(SENSOR, ("r1", "r2"))]
    # nobody related measures flow: no verdict
    assert judge([event("lone", 1000.0, "flow")], {}) == [("", ())]
