--------------------------- MODULE DotKernelSet ---------------------------
(* The add-wins OR-set of crdt_core (crdt_core/src/orset.rs) with its own causal context, replicated by  *)
(* messages that the network drops, duplicates and reorders. Every set delta and catch-up carries the   *)
(* whole set with its context: the classic delta (just the new dot, context = new + superseded dots)    *)
(* needs causal delivery; without it a replica can record a killing event as seen without its kills,    *)
(* and equal contexts stop implying equal state. This model found exactly that (DotsMatchSpec failed on  *)
(* add, add, add with the middle delta lost) before the engine switched to whole-set deltas.            *)
(* dots[r][e]: the add events keeping e present at r; ctx[r]: every event r has seen.                   *)
(* An add makes a fresh dot and supersedes the dots of e it saw; a remove drops them (plus its own      *)
(* fresh dot in the context); a merge keeps a dot iff both sides have it or the side lacking it never   *)
(* saw it.                                                                                              *)
(*                                                                                                      *)
(* Invariant            what it says                                  the test that checks it in code  *)
(* TypeOK               shapes; every kept dot is in the context      -                                *)
(* DotsMatchSpec        every replica holds exactly the add dots it   crdt_core/tests/laws.rs          *)
(*                      has seen and no seen event killed (the         every_replica_matches_the_       *)
(*                      sequential spec, AntidoteDB style)             sequential_spec                  *)
(* SEC                  equal contexts => equal state (why equal       crdt_core/tests/laws.rs          *)
(*                      digests may skip a twin in anti-entropy)       catch_up_gives_what_the_peer_    *)
(*                                                                     lacks                            *)
(* NoTombstones         a removed element keeps no data, only dots in  crdt_core/tests/laws.rs          *)
(*                      the context                                    overwrites_cost_no_memory_...    *)
EXTENDS Naturals, FiniteSets

CONSTANTS Replica, Elem, MaxEvents, MaxMsgs

VARIABLES dots, ctx, msgs, nevents, adds, killers
vars == <<dots, ctx, msgs, nevents, adds, killers>>

Dot == Replica \X (1..MaxEvents)
NoDots == [e \in Elem |-> {}]

Init == /\ dots = [r \in Replica |-> NoDots]
        /\ ctx = [r \in Replica |-> {}]
        /\ msgs = {}
        /\ nevents = 0
        /\ adds = {}                  \* ghost: <<e, d>> for every add
        /\ killers = {}               \* ghost: <<k, D>>: event k killed the add dots D

Send(m) == IF Cardinality(msgs) < MaxMsgs THEN msgs \cup {m} ELSE msgs

Add(r, e) == LET d == <<r, nevents + 1>> IN
  /\ nevents < MaxEvents
  /\ adds' = adds \cup {<<e, d>>}
  /\ killers' = killers \cup {<<d, dots[r][e]>>}
  /\ dots' = [dots EXCEPT ![r][e] = {d}]
  /\ ctx' = [ctx EXCEPT ![r] = @ \cup {d}]
  /\ msgs' = Send([d |-> [dots EXCEPT ![r][e] = {d}][r], c |-> ctx[r] \cup {d}])
  /\ nevents' = nevents + 1

Remove(r, e) == LET d == <<r, nevents + 1>> IN
  /\ nevents < MaxEvents
  /\ dots[r][e] # {}
  /\ killers' = killers \cup {<<d, dots[r][e]>>}
  /\ dots' = [dots EXCEPT ![r][e] = {}]
  /\ ctx' = [ctx EXCEPT ![r] = @ \cup {d}]
  /\ msgs' = Send([d |-> [dots EXCEPT ![r][e] = {}][r], c |-> ctx[r] \cup {d}])
  /\ nevents' = nevents + 1
  /\ UNCHANGED adds

JoinDots(d1, c1, d2, c2) == (d1 \cap d2) \cup (d1 \ c2) \cup (d2 \ c1)

Merge(r, m) ==
  /\ dots' = [dots EXCEPT ![r] = [e \in Elem |-> JoinDots(dots[r][e], ctx[r], m.d[e], m.c)]]
  /\ ctx' = [ctx EXCEPT ![r] = @ \cup m.c]
  /\ UNCHANGED <<msgs, nevents, adds, killers>>

Next == \/ \E r \in Replica, e \in Elem : Add(r, e) \/ Remove(r, e)
        \/ \E r \in Replica, m \in msgs : Merge(r, m)                  \* delivery; the copy stays: duplicates
        \/ \E m \in msgs : msgs' = msgs \ {m} /\ UNCHANGED <<dots, ctx, nevents, adds, killers>>   \* loss
        \/ \E r, s \in Replica : r # s /\ Merge(r, [d |-> dots[s], c |-> ctx[s]])                  \* catch-up

Spec == Init /\ [][Next]_vars

Value(r) == {e \in Elem : dots[r][e] # {}}
SeenKills(r) == UNION {k[2] : k \in {x \in killers : x[1] \in ctx[r]}}
SpecDots(r, e) == {a[2] : a \in {x \in adds : x[1] = e /\ x[2] \in ctx[r] /\ x[2] \notin SeenKills(r)}}

TypeOK == /\ nevents \in 0..MaxEvents
          /\ \A r \in Replica : ctx[r] \subseteq Dot /\ \A e \in Elem : dots[r][e] \subseteq ctx[r]

DotsMatchSpec == \A r \in Replica, e \in Elem : dots[r][e] = SpecDots(r, e)

SEC == \A r, s \in Replica : ctx[r] = ctx[s] => dots[r] = dots[s]

NoTombstones == \A r \in Replica, e \in Elem : dots[r][e] \cap SeenKills(r) = {}
=============================================================================
