--------------------------- MODULE DeltaProtocol ---------------------------
(*
Delta-interval anti-entropy (Almeida, Shoker & Baquero 2018, Algorithm 2) as drsdtp runs it
(drsdtp/gossip/protocol.py AntiEntropy, driven by grpc_transport.Session), with the node's durable
barrier (drsdtp/node/durable.py). What the model keeps:
 - State: a grow-only set of write events <<writer, counter, incarnation>>. The engine knows an event
   by its dot <<writer, counter>> (causal context) and a merge skips a dot it has seen, so a node that
   reissues a dot after a crash diverges for good; the incarnation only lets the model tell the two
   writes apart. The CRDT itself is DotKernelSet.tla's concern.
 - Durable vs volatile: `durable` is the fsynced write-ahead log; local writes and received deltas
   wait in `wlocal` / `wremote` for the next group commit. A crash keeps `durable` only: store, WAL
   buffer, delta log, links, receivers and queues are lost and the node returns with a new
   incarnation (tests/gossip/sim.py Replica.crash; the Replicator draws a random one).
 - The delta log (delta_log.py): one per node, shared by its links, sequence numbers from 1 in each
   incarnation, at most MaxBuffer entries: shedding one a link still needed moves the link's acked
   point to the floor and wants a digest repair (AntiEntropy._bound).
 - Per link (PeerLink): acked, repair_wanted; per receiver (_Receiver): the contiguous frontier of the
   peer's current log and the intervals merged ahead of a gap; per stream: the queued cumulative ack.
 - Sessions (one gRPC stream per pair): Connect and Disconnect are heal and partition. A session's
   messages, queued acks and held catch-up chunks die with it; the handshake is reliable (as in sim.py).
 - The network reorders everything and loses DeltaBatches and Acks. Repair messages are lost only with
   their session, as in the simulation's strict variant (a lost one, like a catch-up reply the real
   stream drops when its queue is full, is the periodic repair's job). A gRPC stream does not duplicate:
   what repeats are resends (the retransmission timer, a reopened session), overlapping what is still in
   flight; a resend of a delivered batch is an exact duplicate.
Not modelled: scopes, windows, batch and message size limits, clock skew (how much travels in one
message), and the Links message: a received delta is relayed to every other peer, never held back from
one its sender streams to (that optimisation and the repair when such a stream drops are tested by
tests/gossip/test_gossip_protocol.py::test_a_delta_held_back_for_a_link_that_then_drops_is_repaired_at_once).

Invariants, each with the tests that check the same property of the implementation:
TypeOK                shapes and bounds.
NoAckedWriteLost      a write acknowledged to its client (MQTT PUBACK, after the group commit) is in its
                      writer's durable state, whatever crashed.
    tests/daemon/test_durability.py::test_sigkill_under_heavy_ingest_loses_no_acknowledged_write
    tests/daemon/test_mqtt_durability.py::test_sigkill_mid_stream_loses_no_qos1_reading
AckedIsDurable        no gossip Ack leaves while something it covers (what the acked deltas changed at
                      the receiver) is not durable at the receiver.
    tests/gossip/test_gossip_replicator.py::test_a_received_delta_is_acknowledged_only_after_persist_returns
    tests/gossip/test_gossip_protocol.py::test_deltas_are_acknowledged_cumulatively_and_collected
OnlyDurableLeaves     a node's own write is seen outside it (the network, other nodes) only once durable
                      at it: deltas leave after the commit, catch-up chunks after sync(). So nobody holds
                      (or claims in a context) a write its writer can lose.
    tests/gossip/test_gossip_sim.py::test_without_the_durability_barrier_crashes_break_convergence
NoDotReissued         no two different writes share a dot, whatever crashed (the divergence the
                      simulation's oracle and sequential-spec checks would see).
    tests/gossip/test_gossip_sim.py::test_lossy_network_with_partitions_and_crashes_converges
QuiescentConvergence  once every pair is connected, nothing is in flight or waiting for a commit, every
                      link is acked up to its log's head and no repair is wanted, every node holds
                      exactly the acknowledged writes: the safety half of convergence (where a run that
                      settles ends up). That fair runs do settle is liveness, which TLC cannot check over
                      this state space within CI.
    tests/gossip/test_gossip_sim.py::test_delta_path_alone_converges_once_healed
    tests/gossip/test_gossip_protocol.py::test_receiver_acks_only_its_contiguous_frontier
    tests/gossip/test_gossip_protocol.py::test_a_full_buffer_sheds_and_the_peer_catches_up_from_a_digest
    tests/gossip/test_gossip_replicator.py::test_a_restarted_node_catches_up_from_its_peer
*)
(* Mutants (check.sh runs each with DeltaProtocol.cfg and only its invariant; TLC must find it violated): *)
(*   AckBeforePersist      a receiver acks before its merge is durable              -> AckedIsDurable *)
(*   ClientAckBeforeFlush  a write is acknowledged to its client before the commit  -> NoAckedWriteLost *)
(*   CatchUpWithoutSync    catch-up chunks skip the durable barrier (sync())        -> OnlyDurableLeaves *)
(*   IgnoreGaps            a receiver acks a batch that arrived ahead of a gap      -> QuiescentConvergence *)
(*
What TLC showed besides: an Ack does not mean the whole acked batch is durable at the receiver. A batch
that changes nothing, because its events were merged before (from another peer, or on an earlier stream
with this one that dropped) and still wait for the commit, is acknowledged at once: an ack waits only
for the persists queued on its own stream. Should the receiver crash before that commit, the sender has
dropped the entry and the receiver has lost the events. Nothing is lost for good (the writer holds its
write durably, and a restarted node repairs with every peer), which QuiescentConvergence checks over
such runs; AckedIsDurable holds for what a batch changed, as Session._ack_loop promises.
*)
EXTENDS Integers, FiniteSets, Sequences

CONSTANTS N,                    \* nodes 1..N (the lower id owns the periodic repair, as node ids compare)
          MaxWrites,            \* local writes in a behaviour, over all nodes
          MaxCrashes,           \* crash-restarts in a behaviour, over all nodes
          MaxCuts,              \* sessions ended by the network (partitions) in a behaviour
          MaxBuffer,            \* delta log entries a node keeps (limits.buffer_entries)
          MaxMsgs,              \* messages in flight (a state constraint, see Bounded)
          Relay,                \* limits.relay: received deltas are appended to the log for the other peers
          PeriodicRepair,       \* the repair owner may start a digest exchange at any time
          AckBeforePersist, ClientAckBeforeFlush,     \* mutants, FALSE in the real code (see the header)
          CatchUpWithoutSync, IgnoreGaps

Node == 1..N
Local == 0                                    \* the source of a local entry in the log (None in Python)
Idle == -1                                    \* a stream's ack queue is empty
Persisting == -2                              \* it holds a catch-up chunk's persist, no ack yet

VARIABLES
  store,      \* store[n]: events in n's in-memory Store (what it merges against and reads catch-up from)
  durable,    \* durable[n]: events in n's fsynced write-ahead log (survives a crash)
  wlocal,     \* wlocal[n]: local writes applied to the store, appended to the WAL, not yet committed
  wremote,    \* wremote[n]: received events handed to persist, not yet committed
  inc,        \* inc[n]: n's incarnation (restarts so far)
  log,        \* log[n]: the delta log, a sequence of [seq, ev, src]; seq from floor + 1 to head
  head,       \* head[n]: the newest sequence number appended in this incarnation
  link,       \* link[n][p]: n has a PeerLink for p in this incarnation (it outlives sessions)
  acked,      \* acked[n][p]: p acknowledged n's log up to here
  repair,     \* repair[n][p]: repair_wanted while the link is down (a live link starts the round at once)
  front,      \* front[n][p]: every entry of p's current log up to here is merged at n (_Receiver)
  pend,       \* pend[n][p]: intervals <<from, to>> of p's log merged ahead of a gap
  pack,       \* pack[n][p]: the ack queue of n's stream with p: the seq of the cumulative ack waiting
              \* for the commit, or Persisting, or Idle (Session._acks)
  conn,       \* conn: pairs {a, b} with a live session
  msgs,       \* msgs: messages in flight (a set: a resend of a message still in flight is that message)
  held,       \* held[n]: catch-up chunks n computed, waiting for its durable barrier (sync)
  writes, crashes, cuts,
  clientAcked   \* ghost: every write acknowledged to its client

nodeVars == <<store, durable, wlocal, wremote, inc>>
logVars == <<log, head, acked, repair>>
rcvVars == <<front, pend, pack>>
netVars == <<conn, msgs, held>>
counts == <<writes, crashes, cuts, clientAcked>>
vars == <<nodeVars, logVars, link, rcvVars, netVars, counts>>

Max(S) == CHOOSE m \in S : \A x \in S : m >= x
Min(S) == CHOOSE m \in S : \A x \in S : m <= x
Max2(a, b) == IF a > b THEN a ELSE b
Dot(e) == <<e[1], e[2]>>
Dots(S) == {Dot(e) : e \in S}
New(S, D) == {e \in D : Dot(e) \notin Dots(S)}     \* what merging D into S adds (a seen dot is skipped)
Floor(n) == head[n] - Len(log[n])
Links(n) == {p \in Node : link[n][p]}
Up(a, b) == {a, b} \in conn
Row(f, n, p, v) == [f[n] EXCEPT ![p] = v]

\* Messages share one record shape (TLC compares them in sets).
Msg(t, s, d, lo, hi, b, ev, dots, recip) ==
  [t |-> t, src |-> s, dst |-> d, lo |-> lo, hi |-> hi, base |-> b, ev |-> ev, dots |-> dots, recip |-> recip]
DeltasMsg(s, d, lo, hi, b, ev) == Msg("deltas", s, d, lo, hi, b, ev, {}, FALSE)
\* An Ack carries its seq. Its ev is a ghost: what it covers (the events the acked deltas changed at the
\* receiver) that is not durable at the receiver as it leaves. The real code keeps it empty.
AckMsg(s, d, k, undurable) == Msg("ack", s, d, 0, k, 0, undurable, {}, FALSE)
VersionMsg(s, d, dots, recip) == Msg("version", s, d, 0, 0, 0, {}, dots, recip)
ChunkMsg(s, d, ev) == Msg("chunk", s, d, 0, 0, 0, ev, {}, FALSE)
Between(m, a, b) == {m.src, m.dst} = {a, b}

Init == /\ store = [n \in Node |-> {}]
        /\ durable = [n \in Node |-> {}]
        /\ wlocal = [n \in Node |-> {}]
        /\ wremote = [n \in Node |-> {}]
        /\ inc = [n \in Node |-> 0]
        /\ log = [n \in Node |-> <<>>]
        /\ head = [n \in Node |-> 0]
        /\ link = [n \in Node |-> [p \in Node |-> FALSE]]
        /\ acked = [n \in Node |-> [p \in Node |-> 0]]
        /\ repair = [n \in Node |-> [p \in Node |-> FALSE]]
        /\ front = [n \in Node |-> [p \in Node |-> 0]]
        /\ pend = [n \in Node |-> [p \in Node |-> {}]]
        /\ pack = [n \in Node |-> [p \in Node |-> Idle]]
        /\ conn = {}
        /\ msgs = {}
        /\ held = [n \in Node |-> {}]
        /\ writes = 0
        /\ crashes = 0
        /\ cuts = 0
        /\ clientAcked = {}

(* --- the sender: delta log, batches, repairs (delta_log.py; AntiEntropy.outgoing, _bound, _collect) -- *)
(* A session's writer sends as soon as it is woken (an append, an open), so a live link has sent its   *)
(* whole log (sent = head) and a link that wants a repair starts it at once; waiting is the network's   *)
(* delay. The model therefore sends in the step that makes something sendable and keeps no `sent`.     *)

\* _next_batch from lo: the interval (lo, h] of lg with the entries p needs (never back to their source),
\* joined. An interval with nothing to send that starts at the acked point a counts as acknowledged.
Batch(n, p, lo, a, lg, h) ==
  LET needed == {i \in 1..Len(lg) : lg[i].seq > lo /\ lg[i].src # p}
  IN IF lo >= h THEN [ack |-> a, out |-> {}]
     ELSE IF needed = {} /\ lo = a THEN [ack |-> h, out |-> {}]
     ELSE [ack |-> a, out |-> {DeltasMsg(n, p, lo, h, a, UNION {lg[i].ev : i \in needed})}]

\* _collect: drop the entries (of lg, ending at h) that every link of n has acknowledged in ack.
Trim(n, lg, h, ack) ==
  LET upto == IF Links(n) = {} THEN h ELSE Min({ack[p] : p \in Links(n)})
      fl == h - Len(lg)
  IN IF upto <= fl THEN lg ELSE SubSeq(lg, upto - fl + 1, Len(lg))

\* DeltaLog.append of each of es (a sequence of [ev, src]), then _bound: shed the oldest entries past
\* MaxBuffer; a link whose acked point falls below the new floor jumps to it and wants a repair. Then
\* every live link sends what is new, and starts its repair. st: n's store after the step. The result is
\* n's new log, head, acked row, repair row and the messages sent.
AppendLog(n, es, st) ==
  LET h == head[n] + Len(es)
      all == log[n] \o [i \in 1..Len(es) |-> [seq |-> head[n] + i, ev |-> es[i].ev, src |-> es[i].src]]
      kept == IF Len(all) > MaxBuffer THEN SubSeq(all, Len(all) - MaxBuffer + 1, Len(all)) ELSE all
      fl == h - Len(kept)
      behind(p) == link[n][p] /\ acked[n][p] < fl
      a1(p) == IF behind(p) THEN fl ELSE acked[n][p]
      b(p) == Batch(n, p, Max2(head[n], fl), a1(p), kept, h)
      ack == [p \in Node |-> IF Up(n, p) THEN b(p).ack ELSE a1(p)]
      live == {p \in Node : Up(n, p)}
  IN [log |-> Trim(n, kept, h, ack), head |-> h, acked |-> ack,
      repair |-> [p \in Node |-> (behind(p) \/ repair[n][p]) /\ ~Up(n, p)],
      out |-> UNION {b(p).out \cup (IF behind(p) THEN {VersionMsg(n, p, Dots(st), TRUE)} ELSE {}) :
                     p \in live}]
NoAppend(n) == [log |-> log[n], head |-> head[n], acked |-> acked[n], repair |-> repair[n], out |-> {}]
Appended(n, A) == /\ log' = [log EXCEPT ![n] = A.log]
                  /\ head' = [head EXCEPT ![n] = A.head]
                  /\ acked' = [acked EXCEPT ![n] = A.acked]
                  /\ repair' = [repair EXCEPT ![n] = A.repair]

\* The local writes of one group commit, one log entry each, in write order.
RECURSIVE InOrder(_)
InOrder(S) == IF S = {} THEN <<>>
              ELSE LET e == CHOOSE x \in S : \A y \in S : x[2] <= y[2]
                   IN <<[ev |-> {e}, src |-> Local]>> \o InOrder(S \ {e})

(* --- local writes and the group commit (drsdtp/node/node.py Node.commit, drsdtp/node/durable.py) ------ *)

\* The mutation is applied to the store (its dot: the writer's next counter in the store's causal
\* context), then DurableStore.append buffers its delta in the WAL. Not yet acknowledged.
Write(n) ==
  LET e == <<n, 1 + Max({x[2] : x \in {y \in store[n] : y[1] = n}} \cup {0}), inc[n]>>
  IN /\ writes < MaxWrites
     /\ writes' = writes + 1
     /\ store' = [store EXCEPT ![n] = @ \cup {e}]
     /\ wlocal' = [wlocal EXCEPT ![n] = @ \cup {e}]
     /\ clientAcked' = IF ClientAckBeforeFlush THEN clientAcked \cup {e} ELSE clientAcked
     /\ UNCHANGED <<durable, wremote, inc, logVars, link, rcvVars, netVars, crashes, cuts>>

\* DurableStore._committer: one fsync makes everything buffered durable, then releases the waiters:
\* the client's write is acknowledged (MQTT PUBACK) and Replicator.on_local_delta appends each local
\* delta to the delta log (AntiEntropy.local_delta: only if the node has a link; a later link repairs
\* instead); each stream's queued ack leaves (Session._ack_loop); catch-up chunks held by a sync() go.
Flush(n) ==
  LET A == IF wlocal[n] # {} /\ Links(n) # {} THEN AppendLog(n, InOrder(wlocal[n]), store[n])
           ELSE NoAppend(n)
      \* What a queued ack covers was received since its stream's last ack: in wremote[n], durable now.
      acks == {AckMsg(n, p, pack[n][p], wremote[n] \ durable'[n]) :
               p \in {q \in Node : pack[n][q] >= 0}}
  IN /\ wlocal[n] \cup wremote[n] # {}
     /\ durable' = [durable EXCEPT ![n] = @ \cup wlocal[n] \cup wremote[n]]
     /\ wlocal' = [wlocal EXCEPT ![n] = {}]
     /\ wremote' = [wremote EXCEPT ![n] = {}]
     /\ clientAcked' = clientAcked \cup wlocal[n]
     /\ Appended(n, A)
     /\ msgs' = msgs \cup held[n] \cup acks \cup A.out
     /\ pack' = [pack EXCEPT ![n] = [p \in Node |-> Idle]]
     /\ held' = [held EXCEPT ![n] = {}]
     /\ UNCHANGED <<store, inc, link, front, pend, conn, writes, crashes, cuts>>

(* --- sessions: partition and heal (Replicator._open_session / _close_session) ------------------------ *)

\* AntiEntropy.open at x for its peer y (the handshake is reliable). A new link starts at the head of the
\* log and wants a repair (what came before is the first repair's job); an existing one resends all that
\* is unacknowledged, and its owner repairs again (the old stream may have died mid-repair).
Open(x, y) ==
  LET a == IF link[x][y] THEN acked[x][y] ELSE head[x]
      b == Batch(x, y, a, a, log[x], head[x])
      ack == Row(acked, x, y, b.ack)
      wants == ~link[x][y] \/ x < y \/ repair[x][y]
  IN [acked |-> ack, log |-> Trim(x, log[x], head[x], ack),  \* (a new link is at the head: trims nothing)
      out |-> b.out \cup (IF wants THEN {VersionMsg(x, y, Dots(store[x]), TRUE)} ELSE {})]

Connect(a, b) ==
  LET A == Open(a, b)
      B == Open(b, a)
  IN /\ a < b /\ ~Up(a, b)
     /\ conn' = conn \cup {{a, b}}
     /\ link' = [link EXCEPT ![a][b] = TRUE, ![b][a] = TRUE]
     /\ acked' = [acked EXCEPT ![a] = A.acked, ![b] = B.acked]
     /\ log' = [log EXCEPT ![a] = A.log, ![b] = B.log]
     /\ repair' = [repair EXCEPT ![a][b] = FALSE, ![b][a] = FALSE]
     /\ msgs' = msgs \cup A.out \cup B.out
     /\ UNCHANGED <<nodeVars, head, rcvVars, held, counts>>

\* The stream ends (a partition, a keepalive timeout): what was in flight on it, its queued acks and its
\* held catch-up chunks are gone. Links keep their acked points (AntiEntropy.close).
Disconnect(a, b) ==
  /\ Up(a, b) /\ cuts < MaxCuts
  /\ cuts' = cuts + 1
  /\ conn' = conn \ {{a, b}}
  /\ msgs' = {m \in msgs : ~Between(m, a, b)}
  /\ held' = [held EXCEPT ![a] = {m \in @ : m.dst # b}, ![b] = {m \in @ : m.dst # a}]
  /\ pack' = [pack EXCEPT ![a][b] = Idle, ![b][a] = Idle]
  /\ UNCHANGED <<nodeVars, logVars, link, front, pend, writes, crashes, clientAcked>>

\* kill -9 and restart (tests/gossip/sim.py Replica.crash): the store is recovered from the WAL and all
\* else of the node starts afresh, with a new incarnation. Its peers keep their links to it; their
\* receivers for its old log are reset here rather than at its next Hello, which is the same.
Crash(n) ==
  /\ crashes < MaxCrashes
  /\ crashes' = crashes + 1
  /\ conn' = {c \in conn : n \notin c}
  /\ msgs' = {m \in msgs : n \notin {m.src, m.dst}}
  /\ held' = [x \in Node |-> IF x = n THEN {} ELSE {m \in held[x] : m.dst # n}]
  /\ store' = [store EXCEPT ![n] = durable[n]]
  /\ wlocal' = [wlocal EXCEPT ![n] = {}]
  /\ wremote' = [wremote EXCEPT ![n] = {}]
  /\ inc' = [inc EXCEPT ![n] = @ + 1]
  /\ log' = [log EXCEPT ![n] = <<>>]
  /\ head' = [head EXCEPT ![n] = 0]
  /\ link' = [link EXCEPT ![n] = [p \in Node |-> FALSE]]
  /\ acked' = [acked EXCEPT ![n] = [p \in Node |-> 0]]
  /\ repair' = [repair EXCEPT ![n] = [p \in Node |-> FALSE]]
  /\ front' = [x \in Node |-> IF x = n THEN [p \in Node |-> 0] ELSE [front[x] EXCEPT ![n] = 0]]
  /\ pend' = [x \in Node |-> IF x = n THEN [p \in Node |-> {}] ELSE [pend[x] EXCEPT ![n] = {}]]
  /\ pack' = [x \in Node |-> IF x = n THEN [p \in Node |-> Idle] ELSE [pack[x] EXCEPT ![n] = Idle]]
  /\ UNCHANGED <<durable, writes, cuts, clientAcked>>

(* --- the delta path (AntiEntropy.outgoing / _on_deltas / _on_ack) -------------------------------------- *)

\* The retransmission timer: everything unacknowledged again, from the acked point.
Retransmit(s, r) ==
  LET b == Batch(s, r, acked[s][r], acked[s][r], log[s], head[s])
  IN /\ Up(s, r) /\ acked[s][r] < head[s]
     /\ acked' = [acked EXCEPT ![s][r] = b.ack]
     /\ log' = [log EXCEPT ![s] = Trim(s, log[s], head[s], acked'[s])]
     /\ msgs' = msgs \cup b.out
     /\ UNCHANGED <<nodeVars, head, repair, link, rcvVars, conn, held, counts>>

\* _Receiver.advance: the sender's acked point is covered; an interval ahead of a gap waits in pending.
RECURSIVE Absorb(_, _)
Absorb(f, pd) == LET ready == {iv \in pd : iv[1] <= f}
                 IN IF ready = {} THEN <<f, pd>>
                    ELSE Absorb(Max({f} \cup {iv[2] : iv \in ready}), pd \ ready)
Advance(f, pd, base, lo, hi) ==
  LET f0 == Max2(f, base)
  IN IF lo > f0 /\ ~IgnoreGaps THEN <<f0, pd \cup {<<lo, hi>>}>> ELSE Absorb(Max2(f0, hi), pd)

\* _on_deltas: merge; what changed goes to persist and, relayed, into the log for the other peers. The
\* cumulative ack of the new frontier queues behind this stream's persists (Session._ack_loop): it leaves
\* with the next commit, or at once if nothing is queued before it.
RecvDeltas(m) ==
  LET r == m.dst
      s == m.src
      ch == New(store[r], m.ev)
      adv == Advance(front[r][s], pend[r][s], m.base, m.lo, m.hi)
      now == AckBeforePersist \/ (ch = {} /\ pack[r][s] = Idle)
      A == IF Relay /\ ch # {} /\ Links(r) \ {s} # {}
           THEN AppendLog(r, <<[ev |-> m.ev, src |-> s]>>, store[r] \cup ch) ELSE NoAppend(r)
  IN /\ m.t = "deltas"
     /\ store' = [store EXCEPT ![r] = @ \cup ch]
     /\ wremote' = [wremote EXCEPT ![r] = @ \cup ch]
     /\ front' = [front EXCEPT ![r][s] = adv[1]]
     /\ pend' = [pend EXCEPT ![r][s] = adv[2]]
     /\ pack' = IF now THEN pack ELSE [pack EXCEPT ![r][s] = adv[1]]
     /\ Appended(r, A)
     /\ msgs' = (msgs \ {m}) \cup A.out
                \cup (IF now THEN {AckMsg(r, s, adv[1], ch \ durable[r])} ELSE {})
     /\ UNCHANGED <<durable, wlocal, inc, link, conn, held, counts>>

\* _on_ack: clamped to the head; the log drops what every link acknowledged. (A duplicated Ack needs no
\* action of its own: delivering it again changes nothing, acked only grows.)
RecvAck(m) ==
  LET s == m.dst
      r == m.src
      k == IF m.hi < head[s] THEN m.hi ELSE head[s]
  IN /\ m.t = "ack"
     /\ msgs' = msgs \ {m}
     /\ IF k > acked[s][r]
        THEN /\ acked' = [acked EXCEPT ![s][r] = k]
             /\ log' = [log EXCEPT ![s] = Trim(s, log[s], head[s], acked'[s])]
        ELSE UNCHANGED <<acked, log>>
     /\ UNCHANGED <<nodeVars, head, repair, link, rcvVars, conn, held, counts>>

\* The network loses a DeltaBatch or an Ack.
Drop(m) ==
  /\ m.t \in {"deltas", "ack"}
  /\ msgs' = msgs \ {m}
  /\ UNCHANGED <<nodeVars, logVars, link, rcvVars, conn, held, counts>>

(* --- digest-driven catch-up (AntiEntropy._start_repair / _on_digest / _on_version / _on_chunk) ------- *)
(* The real round opens with a Digest (a hash of each twin's causal context) that the peer answers with *)
(* its Version of the twins that differ. With one twin the Digest only says whether the contexts differ,*)
(* so here a round opens with the reciprocating Version itself (one hop less), sent by Open and Append  *)
(* (a new link, a reconnect, a truncation) or by the periodic timer below.                             *)

PeriodicRound(a, b) ==
  /\ PeriodicRepair /\ a < b /\ Up(a, b)
  /\ msgs' = msgs \cup {VersionMsg(a, b, Dots(store[a]), TRUE)}
  /\ UNCHANGED <<nodeVars, logVars, link, rcvVars, conn, held, counts>>

\* _on_digest + _on_version: equal contexts imply equal state, so an equal one ends the round. Else the
\* chunk of what the asker lacks is read from the store now and sent after sync() (Inbound.after_sync):
\* at once when nothing waits for a commit, else held until the next commit. A reciprocating Version is
\* answered with ours, so one round repairs both ways.
RecvVersion(m) ==
  LET x == m.dst
      y == m.src
      equal == m.recip /\ m.dots = Dots(store[x])
      chunk == {e \in store[x] : Dot(e) \notin m.dots}
      now == CatchUpWithoutSync \/ wlocal[x] \cup wremote[x] = {}
      out == (IF m.recip /\ ~equal THEN {VersionMsg(x, y, Dots(store[x]), FALSE)} ELSE {})
             \cup (IF chunk # {} /\ now THEN {ChunkMsg(x, y, chunk)} ELSE {})
  IN /\ m.t = "version"
     /\ msgs' = (msgs \ {m}) \cup out
     /\ held' = IF chunk # {} /\ ~now THEN [held EXCEPT ![x] = @ \cup {ChunkMsg(x, y, chunk)}] ELSE held
     /\ UNCHANGED <<nodeVars, logVars, link, rcvVars, conn, counts>>

\* _on_chunk: merged and persisted, never acknowledged, never appended to the log (valid for us only).
\* Its persist still joins the stream's ack queue, so a later ack on this stream waits for it.
RecvChunk(m) ==
  LET r == m.dst
      ch == New(store[r], m.ev)
  IN /\ m.t = "chunk"
     /\ store' = [store EXCEPT ![r] = @ \cup ch]
     /\ wremote' = [wremote EXCEPT ![r] = @ \cup ch]
     /\ pack' = IF ch # {} /\ pack[r][m.src] = Idle THEN [pack EXCEPT ![r][m.src] = Persisting] ELSE pack
     /\ msgs' = msgs \ {m}
     /\ UNCHANGED <<durable, wlocal, inc, logVars, link, front, pend, conn, held, counts>>

Next ==
  \/ \E n \in Node : Write(n) \/ Flush(n) \/ Crash(n)
  \/ \E a, b \in Node : a # b /\ (Connect(a, b) \/ Disconnect(a, b) \/ Retransmit(a, b)
                                  \/ PeriodicRound(a, b))
  \/ \E m \in msgs : \/ RecvDeltas(m) \/ RecvAck(m) \/ Drop(m)
                     \/ RecvVersion(m) \/ RecvChunk(m)

Spec == Init /\ [][Next]_vars

\* The state space is finite (writes, crashes and cuts are bounded); this keeps the network small.
Bounded == Cardinality(msgs) <= MaxMsgs

(* --- properties --------------------------------------------------------------------------------------- *)

MsgEvents == UNION {m.ev : m \in {x \in msgs : x.t # "ack"}}
HeldEvents == UNION {UNION {m.ev : m \in held[n]} : n \in Node}
LogEvents(n) == UNION {log[n][i].ev : i \in 1..Len(log[n])}
AllEvents == UNION {store[n] \cup LogEvents(n) : n \in Node} \cup MsgEvents \cup HeldEvents
\* Events that left their writer: in the network, or held by another node.
Outside == MsgEvents \cup UNION {{e \in store[n] \cup LogEvents(n) : e[1] # n} : n \in Node}

TypeOK == /\ writes \in 0..MaxWrites /\ crashes \in 0..MaxCrashes /\ cuts \in 0..MaxCuts
          /\ \A n \in Node : /\ durable[n] \subseteq store[n]
                             /\ wlocal[n] \cup wremote[n] \subseteq store[n]
                             /\ Len(log[n]) <= MaxBuffer
                             /\ \A p \in Links(n) : Floor(n) <= acked[n][p] /\ acked[n][p] <= head[n]

NoAckedWriteLost == \A e \in clientAcked : e \in durable[e[1]]

\* No Ack leaves while something it covers is not durable at its sender (durable only grows after).
AckedIsDurable == \A m \in msgs : m.t = "ack" => m.ev = {}

OnlyDurableLeaves == \A e \in Outside : e \in durable[e[1]]

NoDotReissued == \A e1, e2 \in AllEvents : Dot(e1) = Dot(e2) => e1 = e2

Quiescent == /\ msgs = {}
             /\ \A a, b \in Node : a < b => Up(a, b)
             /\ \A n \in Node : wlocal[n] = {} /\ wremote[n] = {} /\ held[n] = {}
             /\ \A n, p \in Node : n # p => (pack[n][p] = Idle /\ acked[n][p] = head[n] /\ ~repair[n][p])

QuiescentConvergence == Quiescent => \A n \in Node : store[n] = clientAcked

\* Witnesses (check.sh requires TLC to refute each): the states that make the invariants above mean
\* something are reachable.
NeverSettlesAfterACrash == ~(Quiescent /\ crashes > 0 /\ \A n \in Node : store[n] # {})
NeverTruncates == ~\E n, p \in Node : repair[n][p]    \* only shedding sets it on a down link
=============================================================================
