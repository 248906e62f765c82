"""A site's alerting settings and contacts, with the defaults a site that set nothing gets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.models import AlertContact, SiteAlerting

# What the kiosk offers when the site defines no categories of its own (kasuhara guideline types).
DEFAULT_CATEGORIES: tuple[dict[str, str], ...] = (
    {"code": "verbal-abuse", "ja": "暴言", "en": "Verbal abuse"},
    {"code": "threats", "ja": "脅迫", "en": "Threats"},
    {"code": "violence", "ja": "暴力", "en": "Violence"},
    {"code": "unreasonable-demands", "ja": "不当な要求", "en": "Unreasonable demands"},
    {"code": "other", "ja": "その他", "en": "Other"},
)
DEFAULTS: dict[str, Any] = {
    "escalate_after_seconds": 120,
    "incident_alerts": True,
    "opening_hours": None,
    "timezone": "Asia/Tokyo",
}


def alerting(session: Session, site_id: str) -> SiteAlerting:
    """The site's row, or an unsaved one holding the defaults."""
    row = session.get(SiteAlerting, site_id)
    return row if row is not None else SiteAlerting(site_id=site_id, incident_categories=None, **DEFAULTS)


def categories(row: SiteAlerting) -> list[dict[str, str]]:
    return list(row.incident_categories or DEFAULT_CATEGORIES)


def contacts(session: Session, site_id: str, tier: int | None = None) -> list[AlertContact]:
    query = select(AlertContact).where(AlertContact.site_id == site_id)
    if tier is not None:
        query = query.where(AlertContact.tier == tier)
    return list(session.scalars(query.order_by(AlertContact.tier, AlertContact.created_at)))


def next_tier(session: Session, site_id: str, after: int) -> int | None:
    """The lowest tier above `after` that has a contact (tiers may skip numbers)."""
    tiers = session.scalars(
        select(AlertContact.tier).where(AlertContact.site_id == site_id, AlertContact.tier > after)
    ).all()
    return min(tiers) if tiers else None
