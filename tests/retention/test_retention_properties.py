"""A hypothesis state machine over the whole retention system, against an independent model.

Random sequences of: recordings (routine, objection, interrupted; two sites),
policy changes, incident flags, officer extensions, explicit and scoped holds,
releases, clock advances, and purge runs that may crash between any two steps
of the purge. Properties:

* safety: a run only ever starts purging recordings the model says may go at
  that moment (never a held or unexpired one), and nothing is purged twice;
* liveness: a run that is not interrupted leaves every recording the model
  says may go purged, and nothing half-done;
* at every step each recording is whole (keys, rows, objects), or shredded
  (no key: unreadable), or purged (nothing but a signed tombstone).

The model's verdicts come from tests/retention_reference.py, not from
retention.decide.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import nacl.signing
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import delete, func, select

import retention.purge
from api.bootstrap import init_data_dir
from api.core.audit import record_event
from api.core.models import AccessLog, Device, Recording, SealedKey, Segment, Site, utcnow
from api.core.services import build_services
from api.core.settings import Settings
from api.core.storage.interface import segment_key
from api.ingest import SegmentUpload, add_segment, create_recording
from api.retrieval import read_audio
from api.schemas import RecordingCreate
from evidence.audit_actions import Action
from evidence.chain import sign_header
from retention import job
from retention.decide import HoldFacts, RecordingFacts
from retention.lifecycle import mark_interrupted
from retention.models import Hold, HoldRecording, RetentionPolicy, Tombstone
from retention.policy import SHIPPED_DEFAULTS, Category, Rule
from retention.purge import verify_deletion_record
from retention.store import DEFAULT_SCOPE, recompute_for_rule, refresh_retention
from tests.support.backends import BACKENDS
from tests.support.factories import SimDevice
from tests.support.retention_reference import ref_may_purge

SITES = ("north", "south")
CATEGORIES: tuple[Category, ...] = ("routine", "incident", "objection", "interrupted")
CRASH_POINTS = ("shred", "object", "objects", "purge")


class SimulatedCrash(BaseException):
    """Raised at a crash point: like kill -9, it unwinds without committing anything still open."""


class RetentionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="retention-machine-"))
        self.backend = BACKENDS.allocate()  # a fresh database per example, not per test
        config = Settings(data_dir=self.tmp / "server", env="development", **self.backend.settings)
        init_data_dir(config)
        self.svc = build_services(config)
        self.now = utcnow()
        self.devices: dict[str, tuple[Device, SimDevice]] = {}
        with self.svc.sessions() as session, session.begin():
            session.add_all([Site(id=site, name=site) for site in SITES])
            session.flush()  # sites before devices (no ORM relationship orders them)
            for site in SITES:
                key = nacl.signing.SigningKey.generate()
                device = Device(
                    id=str(uuid.uuid4()), name=f"counter-{site}", site_id=site, public_key=bytes(key.verify_key)
                )
                session.add(device)
                # What enrolment writes: reads trust a device key only as the audit log recorded it.
                record_event(
                    session,
                    actor=f"device:{device.id}",
                    action=Action.DEVICE_ENROL,
                    target=f"device:{device.id}",
                    detail={"site": site, "public_key": bytes(key.verify_key).hex()},
                )
                sim = SimDevice(device.id, "unused", key, self.svc.keys.public_keys())
                self.devices[site] = (device, sim)
        # The model: what the service should believe, kept independently.
        self.facts: dict[str, RecordingFacts] = {}
        self.segments: dict[str, int] = {}
        self.policies: dict[tuple[str | None, Category], Rule] = {}
        self.holds: list[HoldFacts] = []

    def teardown(self) -> None:
        try:
            self._run_and_check(crash=None)  # eventually: everything that may go, goes
            self._check_live_recordings_read()
        finally:
            self.svc.engine.dispose()
            BACKENDS.release(self.backend)
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ----------------------------------------------------------------------- the model

    def _rules(self) -> list[Rule]:
        stored_defaults = {cat for (site, cat) in self.policies if site is None}
        return [r for r in SHIPPED_DEFAULTS if r.category not in stored_defaults] + list(self.policies.values())

    def _may_purge(self, rid: str) -> bool:
        return ref_may_purge(self.facts[rid], self._rules(), self.holds, self.now)

    def _states(self) -> dict[str, str | None]:
        with self.svc.sessions() as session:
            return {rid: state for rid, state in session.execute(select(Recording.id, Recording.purge_state))}

    def _live(self) -> list[str]:
        # In creation order, never sorted by id: ids are random, and hypothesis needs the same
        # choices to mean the same recordings when it replays a case.
        states = self._states()
        return [rid for rid in self.facts if states[rid] is None]

    # ----------------------------------------------------------------------- rules

    @rule(
        site=st.sampled_from(SITES),
        kind=st.sampled_from(["given", "objected", "interrupted"]),
        segments=st.integers(1, 2),
        back=st.integers(0, 60) | st.integers(0, 1500),
    )
    def record(self, site: str, kind: str, segments: int, back: int) -> None:
        device, sim = self.devices[site]
        rec = sim.new_recording("objected" if kind == "objected" else "given")
        started = self.now - timedelta(days=back)
        rec.header["started_at"] = started.isoformat()
        rec.header_signature = sign_header(sim.signing_key, rec.header)
        with self.svc.sessions() as session, session.begin():
            row = session.get(Device, device.id)
            assert row is not None
            create_recording(session, row, RecordingCreate.model_validate(rec.create_body()))
        count = 0
        if kind != "objected":
            sim.add_segments(rec, segments, final=kind == "given")
            for seg in rec.segments:
                upload = SegmentUpload(
                    seg.index,
                    seg.final,
                    bytes.fromhex(seg.headers["X-Plaintext-Sha256"]),
                    bytes.fromhex(seg.headers["X-Prev-Hash"]),
                    bytes.fromhex(seg.headers["X-Signature"]),
                    seg.envelope,
                )
                with self.svc.sessions() as session, session.begin():
                    add_segment(session, self.svc.store, session.get(Device, device.id), rec.id, upload)  # type: ignore[arg-type]
            count = segments
        status = {"given": "complete", "objected": "objected", "interrupted": "interrupted"}[kind]
        if kind == "interrupted":
            with self.svc.sessions() as session, session.begin():
                recording = session.get(Recording, str(rec.id))
                assert recording is not None
                mark_interrupted(session, recording, "system", "test")
        rid = str(rec.id)
        self.facts[rid] = RecordingFacts(rid, site, device.id, started, status)
        self.segments[rid] = count

    @initialize(
        kinds=st.lists(st.sampled_from(["given", "objected", "interrupted"]), min_size=2, max_size=6),
        backs=st.lists(st.integers(0, 1500), min_size=6, max_size=6),
        held_site=st.none() | st.sampled_from(SITES),
    )
    def some_recordings(self, kinds: list[str], backs: list[int], held_site: str | None) -> None:
        """Start with a few recordings of all ages (and maybe a hold), so most runs have something to decide."""
        for i, kind in enumerate(kinds):
            self.record(SITES[i % 2], kind, 1 + i % 2, backs[i])
        if held_site is not None:
            self.hold_scope("S-0", held_site, None, None)

    @precondition(lambda self: self.facts)
    @rule(data=st.data(), category=st.sampled_from(["threat", "noise"]))
    def flag(self, data: st.DataObject, category: str) -> None:
        rid = data.draw(st.sampled_from(list(self.facts)))
        with self.svc.sessions() as session, session.begin():
            recording = session.get(Recording, rid)
            assert recording is not None
            if recording.purge_state is not None:
                return  # the API answers 410
            recording.incident_category = category
            refresh_retention(session, recording)
        self.facts[rid] = RecordingFacts(**{**self.facts[rid].__dict__, "incident_category": category})

    @precondition(lambda self: self.facts)
    @rule(data=st.data(), days=st.integers(1, 2000))
    def extend(self, data: st.DataObject, days: int) -> None:
        rid = data.draw(st.sampled_from(list(self.facts)))
        until = self.now + timedelta(days=days)
        current = self.facts[rid].extended_until
        if current is not None and until < current:
            return  # the API refuses to shorten an extension
        with self.svc.sessions() as session, session.begin():
            recording = session.get(Recording, rid)
            assert recording is not None
            if recording.purge_state is not None:
                return
            recording.retain_extended_until = until
            refresh_retention(session, recording)
        self.facts[rid] = RecordingFacts(**{**self.facts[rid].__dict__, "extended_until": until})

    @rule(
        site=st.sampled_from([None, "north"]),
        category=st.sampled_from(CATEGORIES),
        retain=st.none() | st.integers(0, 1200),
        delete=st.none() | st.integers(1, 1200),
    )
    def set_policy(self, site: str | None, category: Category, retain: int | None, delete: int | None) -> None:
        if retain is None and delete is None:
            return  # refused by validation
        scope = site or DEFAULT_SCOPE
        with self.svc.sessions() as session, session.begin():
            row = session.get(RetentionPolicy, (scope, category)) or RetentionPolicy(
                scope=scope, category=category, updated_by="test"
            )
            row.retain_days, row.delete_days = retain, delete
            session.add(row)
            session.flush()
            recompute_for_rule(session, site, category)
        self.policies[(site, category)] = Rule(category, site, retain, delete)

    @precondition(lambda self: self.policies)
    @rule(data=st.data())
    def clear_policy(self, data: st.DataObject) -> None:
        site, category = data.draw(st.sampled_from(sorted(self.policies, key=str)))
        with self.svc.sessions() as session, session.begin():
            session.execute(
                delete(RetentionPolicy).where(
                    RetentionPolicy.scope == (site or DEFAULT_SCOPE), RetentionPolicy.category == category
                )
            )
            recompute_for_rule(session, site, category)
        del self.policies[(site, category)]

    @precondition(lambda self: self.facts)
    @rule(data=st.data(), case=st.sampled_from(["C-1", "C-2", "C-3"]))
    def hold_recordings(self, data: st.DataObject, case: str) -> None:
        live = self._live()
        if not live:
            return
        ids = data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=3, unique=True))
        site = self.facts[ids[0]].site
        ids = [rid for rid in ids if self.facts[rid].site == site]  # one site per hold
        self._add_hold(HoldFacts(str(uuid.uuid4()), case, recording_ids=frozenset(ids), site=site))

    @rule(
        case=st.sampled_from(["S-1", "S-2"]),
        site=st.sampled_from(SITES),
        category=st.none() | st.sampled_from(["threat", "noise"]),
        days_back=st.none() | st.integers(0, 90),
    )
    def hold_scope(self, case: str, site: str, category: str | None, days_back: int | None) -> None:
        start = None if days_back is None else self.now - timedelta(days=days_back)
        self._add_hold(
            HoldFacts(str(uuid.uuid4()), case, scoped=True, site=site, started_from=start, incident_category=category)
        )

    def _add_hold(self, h: HoldFacts) -> None:
        with self.svc.sessions() as session, session.begin():
            session.add(
                Hold(
                    id=h.id,
                    case_ref=h.case_ref,
                    reason="property test hold",
                    site_id=h.site,
                    scoped=h.scoped,
                    started_from=h.started_from,
                    incident_category=h.incident_category,
                    created_by="test",
                    recordings=[HoldRecording(recording_id=rid) for rid in sorted(h.recording_ids)],
                )
            )
        self.holds.append(h)

    @precondition(lambda self: any(h.active for h in self.holds))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        h = data.draw(st.sampled_from([h for h in self.holds if h.active]))
        with self.svc.sessions() as session, session.begin():
            row = session.get(Hold, h.id)
            assert row is not None
            row.released_at, row.released_by, row.release_reason = utcnow(), "test", "released in test"
        self.holds = [HoldFacts(**{**x.__dict__, "active": False}) if x.id == h.id else x for x in self.holds]

    @rule(days=st.sampled_from([1, 10, 29, 31, 60, 91, 400, 1100]))
    def advance(self, days: int) -> None:
        self.now += timedelta(days=days)

    @rule(crash=st.none() | st.tuples(st.sampled_from(CRASH_POINTS), st.integers(1, 3)))
    def purge_run(self, crash: tuple[str, int] | None) -> None:
        self._run_and_check(crash)

    # ----------------------------------------------------------------------- checks

    def _run_and_check(self, crash: tuple[str, int] | None) -> None:
        before = self._states()
        may_go = {rid for rid, state in before.items() if state is None and self._may_purge(rid)}
        seen = {"count": 0}

        def hook(point: str) -> None:
            if crash is not None and point == crash[0]:
                seen["count"] += 1
                if seen["count"] == crash[1]:
                    raise SimulatedCrash(point)

        retention.purge.crash_hook = hook
        crashed = False
        try:
            summary = job.run(self.svc, now=self.now)
        except SimulatedCrash:
            crashed = True
        finally:
            retention.purge.crash_hook = None
        after = self._states()
        held_back = [
            rid
            for rid, state in before.items()
            if state is None and rid not in may_go and ref_may_purge(self.facts[rid], self._rules(), [], self.now)
        ]
        event(f"run: crashed={crashed}, purged={'purged' in after.values()}, a hold kept one={bool(held_back)}")
        started = {rid for rid, state in after.items() if before.get(rid) is None and state is not None}
        assert started <= may_go, f"purged without the model's consent: {sorted(started - may_go)}"
        if not crashed:
            assert summary.ok, summary.errors
            assert {rid for rid in may_go if after[rid] != "purged"} == set()
            assert "shredding" not in after.values()

    @invariant()
    def every_recording_is_whole_shredded_or_purged(self) -> None:
        public = bytes(self.svc.keys.signing_key.verify_key)  # type: ignore[union-attr]
        with self.svc.sessions() as session:
            for rid, state in self._states().items():
                keys = session.scalar(select(func.count()).where(SealedKey.recording_id == rid))
                rows = session.scalar(select(func.count()).where(Segment.recording_id == rid))
                objects = sum(self.svc.store.exists(segment_key(rid, i)) for i in range(self.segments[rid]))
                tomb = session.get(Tombstone, rid)
                if state is None:
                    has_audio = self.facts[rid].status != "objected"
                    assert (keys, rows, objects) == (int(has_audio), self.segments[rid], self.segments[rid])
                    assert tomb is None
                elif state == "shredding":
                    assert keys == 0 and tomb is not None and tomb.purged_at is None
                else:
                    assert (keys, rows, objects) == (0, 0, 0)
                    assert tomb is not None and tomb.record is not None and tomb.signature is not None
                    verify_deletion_record(tomb.record, tomb.signature, public)
                    for action in ("retention:recording:shred", "retention:recording:purge"):
                        query = select(func.count()).where(
                            AccessLog.target == f"recording:{rid}", AccessLog.action == action
                        )
                        assert session.scalar(query) == 1, (rid, action)

    def _check_live_recordings_read(self) -> None:
        with self.svc.sessions() as session:
            for rid in self._live():
                recording = session.get(Recording, rid)
                assert recording is not None
                if self.segments[rid]:
                    _, frames = read_audio(session, self.svc.store, self.svc.keys, recording, "flac")
                    assert frames == self.segments[rid] * 16000


RetentionMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=35,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRetentionMachine = RetentionMachine.TestCase


def test_model_time_is_aware() -> None:
    assert isinstance(utcnow(), datetime) and utcnow().tzinfo is not None
