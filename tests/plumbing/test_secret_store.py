"""The local secret store the CLI writes and the deployer reads: two `slipway secret set` at
once never lose a version or hand out the same one."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from contracts.activity import SecretRef
from plumbing.secret_store import LocalSecretStore


def _set_many(root: str, who: int, times: int) -> list[str]:
    store = LocalSecretStore(Path(root))
    return [store.set("heal7/production/db", f"value-{who}-{n}") for n in range(times)]


def test_concurrent_sets_each_get_a_version_of_their_own(tmp_path: Path) -> None:
    writers, times = 6, 25
    with ProcessPoolExecutor(max_workers=writers) as pool:
        answers = list(
            pool.map(_set_many, [str(tmp_path)] * writers, range(writers), [times] * writers)
        )
    versions = [v for answer in answers for v in answer]
    assert sorted(versions, key=int) == [str(n) for n in range(1, writers * times + 1)]
    store = LocalSecretStore(tmp_path)
    kept = {
        store.fetch(
            SecretRef(source="local", name="heal7/production/db", version=v), "production"
        ).value
        for v in versions
    }
    assert len(kept) == writers * times
