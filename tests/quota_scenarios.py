"""What every quota store must do, whichever store it is (Redis/Valkey, SQLite): scenarios the store tests share.

Importable as `quota_scenarios` from any test module (pytest puts tests/ on sys.path for the root conftest).
"""

from __future__ import annotations

import pytest

from gymserve.errors import QuotaExceeded, RateLimited
from gymserve.tenancy.quotas import Quotas
from gymserve.tenancy.tenants import Tenant

TEAM = Tenant("team-a", max_envs=5, creates_per_minute=1000)


def two_workers_share_one_quota(here: Quotas, there: Quotas) -> None:
    """Two workers' admits add up against one max_envs, and a release on one makes room on the other."""
    here.admit(TEAM, 3)
    there.admit(TEAM, 2)
    with pytest.raises(QuotaExceeded) as err:
        here.admit(TEAM, 1)
    assert err.value.details == {"tenant": "team-a", "limit": 5, "usage": 5, "requested": 1}
    there.release("team-a", 2)
    here.admit(TEAM, 2)
    assert here.store is not None and here.store.usage("team-a") == 5


def the_create_rate_holds_across_workers(here: Quotas, there: Quotas) -> None:
    """creates_per_minute counts every worker's creates, and the refusal says when to retry."""
    limited = Tenant("team-b", creates_per_minute=3)
    here.admit(limited, 1)
    there.admit(limited, 1)
    here.admit(limited, 1)
    with pytest.raises(RateLimited) as err:
        there.admit(limited, 1)
    assert 1 <= int(err.value.headers["Retry-After"]) <= 60
