"""``dora-forwarder doctor``'s judgments: facts in, a list of checks out. Pure, no I/O.

Each check says what it found (``detail``) and, when something is wrong, the one thing to do
(``fix``). Only a ``fail`` makes the command exit 1: a ``warn`` is a risk to look at, an
``info`` a reminder of what no API can tell (the DORA data source setting).
``workers.ops.doctor_facts`` gathers the facts; ``workers.cli.doctor`` shows the checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from workers.ops.doctor_fleet import check_fleet
from workers.ops.doctor_records import Check, Facts, Level
from workers.ops.doctor_redis import check_clock, check_redis

if TYPE_CHECKING:
    from workers.ops.status import Status

SUPPORTED_SITES: Final = (
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "uk1.datadoghq.com",
)
"""Datadog's commercial sites, where DORA Metrics is offered (DORA-API.md §6)."""

UNSUPPORTED_SITES: Final = frozenset({"ddog-gov.com", "us2.ddog-gov.com"})
"""The government sites: "DORA Metrics are not available" there (spec tag, docs banner)."""


def settings_url(site: str) -> str:
    """Datadog's DORA settings page for ``site``.

    The web UI is ``app.<site>`` for the sites named by two labels (datadoghq.com,
    datadoghq.eu, ddog-gov.com) and the site itself for the others (us3.datadoghq.com...),
    as in the docs' table of sites.
    """
    host = f"app.{site}" if site.count(".") == 1 else site
    return f"https://{host}/ci/settings/dora"


def check_site(site: str) -> Check:
    """DORA Metrics is offered on the commercial sites, not on the government ones."""
    if site in UNSUPPORTED_SITES or site.endswith(".ddog-gov.com"):
        return Check(
            "site",
            Level.FAIL,
            f"DD_SITE={site}: Datadog does not offer DORA Metrics on its government sites",
            "use an org on a commercial site (datadoghq.com, datadoghq.eu ...); "
            "nothing can be sent to DORA here",
        )
    if site not in SUPPORTED_SITES:
        return Check(
            "site",
            Level.WARN,
            f"DD_SITE={site} is not one of Datadog's sites ({', '.join(SUPPORTED_SITES)})",
            "set DD_SITE to your org's site as Datadog names it, e.g. datadoghq.eu",
        )
    return Check("site", Level.OK, f"DD_SITE={site} offers DORA Metrics")


def check_api_key(facts: Facts) -> Check:
    """The answer of Datadog's key validation endpoint for DD_API_KEY."""
    answer, where = facts.api_key, f"{facts.api_url}/api/v1/validate"
    if answer is None:
        return Check(
            "api_key",
            Level.FAIL,
            "DD_API_KEY is not set: workers cannot send anything",
            "export DD_API_KEY=<an API key of your org on DD_SITE> where the workers run",
        )
    if answer.status is None:
        return Check(
            "api_key",
            Level.FAIL,
            f"cannot reach {where}: {answer.error}",
            "check this host's network and firewall, DD_SITE and FORWARDER_API_URL (workers "
            "use no proxy)",
        )
    if answer.status == 200 and answer.valid is True:
        return Check("api_key", Level.OK, f"accepted by {where}")
    if answer.status in {401, 403} or (answer.status == 200 and answer.valid is False):
        return Check(
            "api_key",
            Level.FAIL,
            f"refused by {where} (HTTP {answer.status}): not a valid API key for "
            f"DD_SITE={facts.site}",
            "check DD_API_KEY (an API key, not an application key) and that DD_SITE is "
            "the site of the org that made it",
        )
    if answer.status == 429 or answer.status >= 500:
        return Check(
            "api_key",
            Level.WARN,
            f"{where} answered HTTP {answer.status}: the key could not be checked",
            "run doctor again in a minute",
        )
    return Check(
        "api_key",
        Level.FAIL,
        f"{where} answered HTTP {answer.status}, not Datadog's answer",
        "check that FORWARDER_API_URL and DD_SITE lead to Datadog's API, and that nothing "
        "on the way (a captive portal, an intercepting proxy) answers in its place",
    )


def check_app_key(facts: Facts, status: Status | None) -> Check:
    """DD_APP_KEY: needed once PATCH or DELETE operations wait for one."""
    waiting = status.app_key_waiting if status is not None else 0
    paused = status is not None and (status.app_key_paused_until_ms or 0) > status.now_ms
    why = f": {status.app_key_detail}" if status is not None and status.app_key_detail else ""
    if paused:
        return Check(
            "app_key",
            Level.FAIL,
            f"Datadog refused the workers' application key; {waiting} PATCH/DELETE "
            f"operation(s) wait{why}",
            "give the workers a valid DD_APP_KEY (permission dora_metrics_write) of the "
            "API key's org, then restart them",
        )
    if waiting:
        where = "the workers" if facts.app_key_set else "the workers (it is not set here)"
        return Check(
            "app_key",
            Level.FAIL,
            f"{waiting} PATCH/DELETE operation(s) wait for an application key{why}",
            f"set DD_APP_KEY (permission dora_metrics_write) on {where}, then restart them",
        )
    if facts.app_key_set:
        return Check("app_key", Level.OK, "DD_APP_KEY is set; no PATCH or DELETE waiting")
    return Check(
        "app_key",
        Level.INFO,
        "DD_APP_KEY is not set: not needed until you publish a PATCH or a DELETE; none waiting",
    )


def check_data_source(site: str) -> Check:
    """The reminder no API can check: the DORA data source must be the API."""
    return Check(
        "data_source",
        Level.INFO,
        'Datadog uses these events only if "datadog-ci CLI / API" is the DORA data source '
        "for Deployments and for Failures (from the moment it is selected; no API can tell)",
        f"check it at {settings_url(site)}",
    )


def diagnose(facts: Facts) -> list[Check]:
    """Every check, in the order people read them: Datadog first, then Redis, then the fleet."""
    status = facts.redis.status if facts.redis is not None else None
    checks = [
        check_api_key(facts),
        check_site(facts.site),
        check_app_key(facts, status),
        check_data_source(facts.site),
        *check_redis(facts),
    ]
    if facts.redis is not None:
        checks.append(check_clock(facts.redis.clock))
        checks.extend(check_fleet(facts.redis))
    return checks
