--------------------------- MODULE MVRegister ---------------------------
(* The multi-value register of crdt_core (crdt_core/src/mvreg.rs, desired.rs) for desired state, in a   *)
(* twin, replicated by messages that the network drops, duplicates and reorders, plus full-state catch-up. *)
(* Two dot spaces, as in the engine: every write or clear is a twin event (e, claimed in the twin context *)
(* tcc, which digests and catch-up compare) and a register event (its register dot <<writer, n>>, n from *)
(* 1 per writer and register, kept in the register's context rcc). A write replaces every sibling its    *)
(* replica has seen with one new value; a clear removes them; a merge keeps a sibling iff both sides have *)
(* it or the side lacking it never saw its dot. A delta claims only its twin event and carries the whole   *)
(* register, which right after the event is (at most) the new value and rcc.                             *)
(*                                                                                                        *)
(* Invariant            what it says                                  the test that checks it in code  *)
(* TypeOK               shapes; every sibling's dot is in rcc         -                                *)
(* SiblingsMatchSpec    a replica holds the value of every write it   crdt_core/tests/laws.rs          *)
(*                      has seen (twin context) that no write or      every_replica_matches_the_       *)
(*                      clear it has seen had seen: concurrent        sequential_spec, desired_writes_ *)
(*                      intents all stay, none comes back             match_the_spec_under_any_delivery*)
(* SEC                  equal twin contexts => equal registers (why   crdt_core/tests/laws.rs          *)
(*                      digests may skip a twin, and why a delta may  equal_contexts_imply_equal_state,*)
(*                      claim one twin event yet carry a whole past)  catch_up_gives_what_the_peer_... *)
(* VersionVector        rcc holds, per writer, exactly 1..n (no       crdt_core/tests/type_laws.rs     *)
(*                      cloud): the register is bounded by its        mv_register_stays_bounded_...;   *)
(*                      writers, not its history                      laws.rs desired_rewrites_cost_...*)
(* OneSiblingPerWriter  each sibling is its writer's newest event in  type_laws.rs mv_register_stays_  *)
(*                      rcc (so at most one per writer); decoders     bounded_...; fuzz_decode.rs      *)
(*                      refuse anything else                          malformed_multi_value_registers_ *)
(*                                                                                                        *)
(* Mutants (one flag each, each run by check.sh, which requires TLC to find the named invariant violated):*)
(*   OneDotDelta           the classic delta: new value, context = its dot + the siblings it covers  -> SiblingsMatchSpec *)
(*   ForgetSiblings        a write keeps the siblings it saw instead of replacing them              -> SiblingsMatchSpec *)
EXTENDS Naturals, FiniteSets, TLC

CONSTANTS Replica, Val, MaxEvents, MaxMsgs,
          OneDotDelta, ForgetSiblings      \* mutants, FALSE in the real code

VARIABLES sib, rcc, tcc, msgs, nevents, writes, killers
vars == <<sib, rcc, tcc, msgs, nevents, writes, killers>>

Event == 1..MaxEvents
RDot == Replica \X (1..MaxEvents)
Dots(S) == {x[1] : x \in S}

Init == /\ sib = [r \in Replica |-> {}]     \* siblings <<register dot, value>>
        /\ rcc = [r \in Replica |-> {}]     \* register dots seen
        /\ tcc = [r \in Replica |-> {}]     \* twin events seen
        /\ msgs = {}
        /\ nevents = 0
        /\ writes = {}                      \* ghost: <<e, d, v>> for every write
        /\ killers = {}                     \* ghost: <<e, D>>: event e had seen the register dots D

Send(m) == IF Cardinality(msgs) < MaxMsgs THEN msgs \cup {m} ELSE msgs

Newest(c, w) == LET ns == {x[2] : x \in {y \in c : y[1] = w}} IN
                IF ns = {} THEN 0 ELSE CHOOSE n \in ns : \A k \in ns : k <= n

\* A write (v # "clear") or a clear at r: twin event e, register dot d.
Op(r, v) == LET e == nevents + 1
                d == <<r, Newest(rcc[r], r) + 1>>
                new == IF v = "clear" THEN {} ELSE {<<d, v>>}
                kept == IF ForgetSiblings /\ v # "clear" THEN sib[r] ELSE {}
                s2 == new \cup kept
                c2 == rcc[r] \cup {d}
            IN
  /\ nevents < MaxEvents
  /\ sib' = [sib EXCEPT ![r] = s2]
  /\ rcc' = [rcc EXCEPT ![r] = c2]
  /\ tcc' = [tcc EXCEPT ![r] = @ \cup {e}]
  /\ writes' = IF v = "clear" THEN writes ELSE writes \cup {<<e, d, v>>}
  /\ killers' = killers \cup {<<e, rcc[r]>>}
  /\ msgs' = Send(IF OneDotDelta THEN [t |-> {e}, s |-> new, c |-> {d} \cup Dots(sib[r])]
                                 ELSE [t |-> {e}, s |-> s2, c |-> c2])
  /\ nevents' = nevents + 1

Join(s1, c1, s2, c2) == {x \in s1 \cup s2 : (x \in s1 /\ x \in s2) \/ (x \in s1 /\ x[1] \notin c2)
                                                                   \/ (x \in s2 /\ x[1] \notin c1)}

Merge(r, m) ==
  /\ sib' = [sib EXCEPT ![r] = Join(sib[r], rcc[r], m.s, m.c)]
  /\ rcc' = [rcc EXCEPT ![r] = @ \cup m.c]
  /\ tcc' = [tcc EXCEPT ![r] = @ \cup m.t]
  /\ UNCHANGED <<msgs, nevents, writes, killers>>

Next == \/ \E r \in Replica, v \in Val \cup {"clear"} : Op(r, v)
        \/ \E r \in Replica, m \in msgs : Merge(r, m)                  \* delivery; the copy stays: duplicates
        \/ \E m \in msgs : msgs' = msgs \ {m} /\ UNCHANGED <<sib, rcc, tcc, nevents, writes, killers>>  \* loss
        \/ \E r, s \in Replica : r # s /\ Merge(r, [t |-> tcc[s], s |-> sib[s], c |-> rcc[s]])  \* catch-up

Spec == Init /\ [][Next]_vars

Symmetry == Permutations(Replica) \cup Permutations(Val)

SeenBy(r) == UNION {k[2] : k \in {x \in killers : x[1] \in tcc[r]}}
SpecSiblings(r) == {<<w[2], w[3]>> : w \in {x \in writes : x[1] \in tcc[r] /\ x[2] \notin SeenBy(r)}}

TypeOK == /\ nevents \in 0..MaxEvents
          /\ \A r \in Replica : /\ rcc[r] \subseteq RDot /\ tcc[r] \subseteq Event
                                /\ sib[r] \subseteq RDot \X Val /\ Dots(sib[r]) \subseteq rcc[r]

SiblingsMatchSpec == \A r \in Replica : sib[r] = SpecSiblings(r)

SEC == \A r, s \in Replica : tcc[r] = tcc[s] => sib[r] = sib[s] /\ rcc[r] = rcc[s]

VersionVector == \A r, w \in Replica : \A d \in rcc[r] : d[1] = w => \A n \in 1..d[2] : <<w, n>> \in rcc[r]

OneSiblingPerWriter == \A r \in Replica : \A x \in sib[r] : x[1][2] = Newest(rcc[r], x[1][1])
=============================================================================
