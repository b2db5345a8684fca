--------------------------- MODULE DotKernelSet ---------------------------
(* The add-wins OR-set of crdt_core (crdt_core/src/orset.rs) in a twin whose other fields are written in  *)
(* between, replicated by messages that the network drops, duplicates and reorders, plus catch-up.        *)
(* Every event of the twin (a set add or remove, or a write of another field) takes the writer's next     *)
(* twin dot <<r, n>>, claimed in the twin context tcc, which digests and catch-up compare. The set keeps  *)
(* its own context sctx apart from tcc. A set event covers, in sctx, every lower dot of its own writer:   *)
(* its writer has seen all its own set events, and the dots in between that belong to other fields are   *)
(* never any element's, so claiming them costs the set nothing and keeps sctx a version vector (one entry *)
(* per writer) however many writes of other fields fall between two set events. A set delta claims only  *)
(* its own twin event in tcc and carries the whole set with sctx: were sctx claimed as the twin's context *)
(* (mutant TwinClaimsSetContext), a receiver would take the twin's other writes as seen without holding   *)
(* them, and catch-up, which sends a peer only what its tcc lacks, would never send them (a lost write).  *)
(* Whole sets, because the classic delta (the new dot, context = new + superseded dots) needs causal       *)
(* delivery: without it a replica records a killing event as seen without its kills (mutant OneDotDelta). *)
(* An add supersedes the dots of e it saw; a remove drops them; a merge keeps a dot iff both sides have   *)
(* it or the side lacking it never saw it. Other fields are modelled as the set of their writes held.     *)
(*                                                                                                        *)
(* Invariant            what it says                                  the test that checks it in code  *)
(* TypeOK               shapes; every kept dot is in the set context  -                                *)
(* DotsMatchSpec        every replica holds exactly the add dots it   crdt_core/tests/laws.rs          *)
(*                      has seen and no seen event killed (the         every_replica_matches_the_       *)
(*                      sequential spec, AntidoteDB style)             sequential_spec, set_context_    *)
(*                                                                     stays_bounded_by_its_writers     *)
(* SEC                  equal twin contexts => equal set, set context  crdt_core/tests/laws.rs          *)
(*                      and other writes (why equal digests may skip   catch_up_gives_what_the_peer_    *)
(*                      a twin in anti-entropy)                        lacks, equal_contexts_imply_...  *)
(* OtherWritesKept      a twin event claimed in tcc is held: a set     crdt_core/tests/laws.rs          *)
(*                      event never makes a replica claim the twin's   set_context_stays_bounded_by_    *)
(*                      other writes (they would be lost)              its_writers                      *)
(* VersionVector        sctx holds, per writer, exactly 1..n: the set  crdt_core/tests/laws.rs          *)
(*                      context is bounded by the set's writers, not   set_context_stays_bounded_by_    *)
(*                      by the twin's other writes                     its_writers; type_laws.rs or_set_*)
(*                                                                     context_stays_a_version_vector   *)
(* NoTombstones         a removed element keeps no data, only dots in  crdt_core/tests/laws.rs          *)
(*                      the context                                    overwrites_cost_no_memory_...    *)
(*                                                                                                        *)
(* Mutants (one flag each, each run by check.sh, which requires TLC to find the named invariant violated):*)
(*   TwinClaimsSetContext  a set delta claims the set's context as the twin's    -> OtherWritesKept *)
(*   NoCover               a set event does not cover its writer's lower dots    -> VersionVector *)
(*   OneDotDelta           the classic delta: new dot, context = it + superseded -> DotsMatchSpec *)
EXTENDS Naturals, FiniteSets, TLC

CONSTANTS Replica, Elem, MaxEvents, MaxMsgs,
          TwinClaimsSetContext, NoCover, OneDotDelta      \* mutants, FALSE in the real code

VARIABLES dots, sctx, tcc, held, msgs, nevents, adds, killers, writes
vars == <<dots, sctx, tcc, held, msgs, nevents, adds, killers, writes>>

Dot == Replica \X (1..MaxEvents)
NoDots == [e \in Elem |-> {}]

Init == /\ dots = [r \in Replica |-> NoDots]
        /\ sctx = [r \in Replica |-> {}]
        /\ tcc = [r \in Replica |-> {}]
        /\ held = [r \in Replica |-> {}]     \* writes of the twin's other fields that r holds
        /\ msgs = {}
        /\ nevents = 0
        /\ adds = {}                  \* ghost: <<e, d>> for every add
        /\ killers = {}               \* ghost: <<k, D>>: event k killed the add dots D
        /\ writes = {}                \* ghost: the dots of the other fields' writes

Send(m) == IF Cardinality(msgs) < MaxMsgs THEN msgs \cup {m} ELSE msgs

Newest(c, w) == LET ns == {x[2] : x \in {y \in c : y[1] = w}} IN
                IF ns = {} THEN 0 ELSE CHOOSE n \in ns : \A k \in ns : k <= n

\* The writer's next twin dot: one counter for every field of the twin.
NextDot(r) == <<r, Newest(tcc[r], r) + 1>>

\* What a set event adds to the set context: its dot and (the fix) every lower dot of its writer.
Covered(d) == IF NoCover THEN {d} ELSE {<<d[1], k>> : k \in 1..d[2]}

\* An add (add = TRUE) or remove of e at r.
SetOp(r, e, add) == LET d == NextDot(r)
                        mine == IF add THEN {d} ELSE {}
                        d2 == [dots[r] EXCEPT ![e] = mine]
                        c2 == sctx[r] \cup Covered(d)
                    IN
  /\ nevents < MaxEvents
  /\ add \/ dots[r][e] # {}
  /\ adds' = IF add THEN adds \cup {<<e, d>>} ELSE adds
  /\ killers' = killers \cup {<<d, dots[r][e]>>}
  /\ dots' = [dots EXCEPT ![r] = d2]
  /\ sctx' = [sctx EXCEPT ![r] = c2]
  /\ tcc' = [tcc EXCEPT ![r] = @ \cup {d}]
  /\ msgs' = Send(IF OneDotDelta
                  THEN [t |-> {d}, d |-> [x \in Elem |-> IF x = e THEN mine ELSE {}], c |-> {d} \cup dots[r][e],
                        o |-> {}]
                  ELSE [t |-> IF TwinClaimsSetContext THEN c2 ELSE {d}, d |-> d2, c |-> c2, o |-> {}])
  /\ nevents' = nevents + 1
  /\ UNCHANGED <<held, writes>>

\* A write of another field of the twin at r: a register delta claims its dot and carries its write.
Write(r) == LET d == NextDot(r) IN
  /\ nevents < MaxEvents
  /\ writes' = writes \cup {d}
  /\ tcc' = [tcc EXCEPT ![r] = @ \cup {d}]
  /\ held' = [held EXCEPT ![r] = @ \cup {d}]
  /\ msgs' = Send([t |-> {d}, d |-> NoDots, c |-> {}, o |-> {d}])
  /\ nevents' = nevents + 1
  /\ UNCHANGED <<dots, sctx, adds, killers>>

JoinDots(d1, c1, d2, c2) == (d1 \cap d2) \cup (d1 \ c2) \cup (d2 \ c1)

Merge(r, m) ==
  /\ dots' = [dots EXCEPT ![r] = [e \in Elem |-> JoinDots(dots[r][e], sctx[r], m.d[e], m.c)]]
  /\ sctx' = [sctx EXCEPT ![r] = @ \cup m.c]
  /\ tcc' = [tcc EXCEPT ![r] = @ \cup m.t]
  /\ held' = [held EXCEPT ![r] = @ \cup m.o]
  /\ UNCHANGED <<msgs, nevents, adds, killers, writes>>

\* Catch-up from s: nothing when r's twin context includes s's (equal digests skip the twin); otherwise
\* the whole set and the writes whose dots r's twin context lacks, claiming s's twin context.
CatchUp(r, s) ==
  /\ ~(tcc[s] \subseteq tcc[r])
  /\ Merge(r, [t |-> tcc[s], d |-> dots[s], c |-> sctx[s], o |-> {x \in held[s] : x \notin tcc[r]}])

Next == \/ \E r \in Replica : Write(r) \/ \E e \in Elem, add \in BOOLEAN : SetOp(r, e, add)
        \/ \E r \in Replica, m \in msgs : Merge(r, m)                  \* delivery; the copy stays: duplicates
        \/ \E m \in msgs : msgs' = msgs \ {m} /\ UNCHANGED <<dots, sctx, tcc, held, nevents, adds, killers, writes>>
        \/ \E r, s \in Replica : r # s /\ CatchUp(r, s)

Spec == Init /\ [][Next]_vars

Symmetry == Permutations(Replica) \cup Permutations(Elem)

SeenKills(r) == UNION {k[2] : k \in {x \in killers : x[1] \in sctx[r]}}
SpecDots(r, e) == {a[2] : a \in {x \in adds : x[1] = e /\ x[2] \in sctx[r] /\ x[2] \notin SeenKills(r)}}

TypeOK == /\ nevents \in 0..MaxEvents
          /\ \A r \in Replica : /\ sctx[r] \subseteq Dot /\ tcc[r] \subseteq Dot /\ held[r] \subseteq writes
                                /\ \A e \in Elem : dots[r][e] \subseteq sctx[r]

DotsMatchSpec == \A r \in Replica, e \in Elem : dots[r][e] = SpecDots(r, e)

SEC == \A r, s \in Replica : tcc[r] = tcc[s] => dots[r] = dots[s] /\ sctx[r] = sctx[s] /\ held[r] = held[s]

OtherWritesKept == \A r \in Replica : tcc[r] \cap writes \subseteq held[r]

VersionVector == \A r \in Replica : \A d \in sctx[r] : \A k \in 1..d[2] : <<d[1], k>> \in sctx[r]

NoTombstones == \A r \in Replica, e \in Elem : dots[r][e] \cap SeenKills(r) = {}
=============================================================================
