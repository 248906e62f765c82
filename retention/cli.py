"""`countersign retention ...`: the purge job and its report, run against the data directory.

The service does not need to be running: like `server init`, these commands
build the services from --data (or COUNTERSIGN_DATA_DIR and the other
COUNTERSIGN_* settings), so cron, a systemd timer or a Kubernetes CronJob can
run them. Exit status (evidence.errors.ExitCode): 0 done, 1 some recordings could
not be purged (they are retried next run), 2 the service is not configured.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from api.core.keys import KeyFileError
from api.core.models import utcnow
from api.core.services import Services, build_services
from api.core.settings import SettingsError, load_settings
from evidence import display
from retention import job
from retention.errors import BadOption, ConflictingOptions, NotAllPurged, NotConfigured, fail

app = typer.Typer(no_args_is_help=True, help="Retention: purge what policy no longer lets us keep; report what is due.")

DataDir = Annotated[Path, typer.Option("--data", envvar="COUNTERSIGN_DATA_DIR", help="Service data directory.")]


def _services(data: Path) -> Services:
    try:
        return build_services(load_settings(data_dir=data))
    except (SettingsError, KeyFileError) as exc:
        raise fail(NotConfigured(str(exc))) from exc


class _Reporter:
    """A progress bar on a terminal; one plain line per recording otherwise (cron mail, journald)."""

    def __init__(self, total: int, dry_run: bool) -> None:
        self.bar: Any = None
        if sys.stderr.isatty() and total:
            label = "checking" if dry_run else "purging"
            self.bar = typer.progressbar(length=total, label=label, file=sys.stderr)
            self.bar.__enter__()

    def __call__(self, event: str, recording_id: str, detail: str) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if event == "error":
                typer.secho(f"\nerror {recording_id}: {detail}", fg=typer.colors.RED, err=True)
            return
        line = f"{event:<11} {recording_id}" + (f"  {detail}" if detail else "")
        typer.echo(line, err=event == "error")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@app.command("run")
def run_(
    data: DataDir,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Change nothing; list what would go and why.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Purge at most this many recordings.")] = None,
    orphans: Annotated[bool, typer.Option("--orphans", help="Also list objects no recording owns.")] = False,
    remove_orphans: Annotated[
        bool, typer.Option("--remove-orphans", help="List orphaned objects and remove them (not with --dry-run).")
    ] = False,
) -> None:
    """Purge recordings past their retain-until date that no hold covers (crash-safe; safe to run twice at once)."""
    if dry_run and remove_orphans:
        raise fail(ConflictingOptions("--remove-orphans changes the store; drop --dry-run"))
    services = _services(data)
    now = utcnow()
    with services.sessions() as session:
        total = job.count_due(session, now) + len(job.unfinished(session))
    reporter = _Reporter(total if limit is None else min(total, limit), dry_run)
    try:
        summary = job.run(services, now=now, dry_run=dry_run, limit=limit, progress=reporter)
    finally:
        reporter.close()
    if dry_run:
        for rid, why in summary.would_purge:
            typer.echo(f"would purge {rid}  {why}")
    for rid, refs in sorted(summary.kept_by_hold.items()):
        typer.echo(f"held        {rid}  {', '.join(refs)}")
    if orphans or remove_orphans:
        report = job.scan_orphans(services, remove=remove_orphans)
        for key in report.orphans:
            typer.echo(f"{'removed' if key in report.removed else 'orphan':<11} {key}")
        for key in report.foreign:
            typer.echo(f"foreign     {key}  (not written by Countersign; left alone)")
        typer.echo(
            f"orphaned objects: {len(report.orphans)} ({len(report.removed)} removed), in flight: {len(report.pending)}"
        )
    for request_id, why in sorted(summary.requests_waiting.items()):
        typer.echo(f"waiting     deletion request {request_id}  {why}")
    if summary.requested_deletions:
        typer.echo(f"requested deletions carried out (grace period over): {len(summary.requested_deletions)}")
    if summary.next_due is not None:
        typer.echo(f"next due {summary.next_due:%Y-%m-%d %H:%M} UTC")
    else:
        typer.echo("next due: none (no other live recording has a deletion date)")
    verb = "would purge" if dry_run else "purged"
    count = len(summary.would_purge) if dry_run else len(summary.purged)
    typer.echo(
        f"{'dry run: ' if dry_run else ''}{verb} {count}, kept by hold {len(summary.kept_by_hold)}, "
        f"kept by policy {summary.kept_by_policy}, errors {len(summary.errors)}"
        + (f" (resumed {summary.resumed}, newly interrupted {summary.interrupted})" if not dry_run else "")
    )
    if summary.errors:
        raise fail(NotAllPurged(f"{len(summary.errors)} recording(s)"))


@app.command()
def status(
    data: DataDir,
    days: Annotated[int, typer.Option(min=0, max=36500, help="Look this many days ahead.")] = 30,
    count: Annotated[
        bool, typer.Option("--count", help="Also count the live recordings not yet due (a pass over the table).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON (times in UTC, ISO).")] = False,
    tz: Annotated[
        str | None, typer.Option("--tz", envvar="COUNTERSIGN_TZ", help="Time zone to show times in (IANA name).")
    ] = None,
) -> None:
    """What is due now and what will expire in the next N days, by site and rule (held ones will not go).

    Times are shown in --tz (COUNTERSIGN_TZ, default Asia/Tokyo); --json prints the same, in UTC ISO form.
    """
    try:
        zone = display.zone(tz)
    except ValueError as exc:
        raise fail(BadOption(str(exc))) from exc
    services = _services(data)
    now = utcnow()
    due_now, lines = job.expiring(services, now, days)
    with services.sessions() as session:
        states = job.purge_states(session)
        later = job.next_due(session, now)
        not_due = job.count_not_due(session, now) if count else None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "as_of": now.isoformat(),
                    "days": days,
                    "due_now": due_now,
                    "next_due": later.isoformat() if later else None,
                    "recordings_by_state": dict(sorted(states.items())),
                    **({"not_yet_due": not_due[0], "no_deletion_date": not_due[1]} if not_due is not None else {}),
                    "expiring": [
                        {
                            "first": x.first.isoformat(),
                            "site": x.site,
                            "count": x.count,
                            "held": x.held,
                            "rule": x.reason,
                        }
                        for x in lines
                    ],
                },
                indent=2,
            )
        )
        return

    def shown(moment: datetime) -> str:
        return display.local(moment, zone, seconds=False)

    by_state = ", ".join(f"{state} {n}" for state, n in sorted(states.items())) or "none"
    typer.echo(f"as of {shown(now)}: {due_now} due now; recordings by state: {by_state}")
    typer.echo(f"next due {shown(later)}" if later else "next due: none")
    if not_due is not None:
        typer.echo(f"not yet due {not_due[0]}, no deletion date {not_due[1]}")
    if not lines:
        typer.echo(f"nothing expires in the next {days} days")
        return
    typer.echo()
    rows = [(shown(x.first), x.site, x.count, x.held, x.reason) for x in lines]
    for line in display.table(("FIRST", "SITE", "COUNT", "HELD", "RULE"), rows):  # cells escaped: site ids
        typer.echo(line)
