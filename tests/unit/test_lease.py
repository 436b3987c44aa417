"""The candidate lease: one writer per candidate, waiting, release, takeover of a dead holder's lease; on both
backends (a local folder, and real S3 conditional writes on SeaweedFS)."""

from __future__ import annotations

import threading
import time

from tuneline.training import lease

KEY = "candidates/abc/lease.json"


def test_a_second_holder_waits_until_the_first_releases(any_storage):
    storage, order, said = any_storage, [], []

    def second():
        with lease.held(storage, KEY, said.append, poll_s=0.05):
            order.append("second")

    with lease.held(storage, KEY, said.append):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.5)
        order.append("first done")
    waiter.join(10)
    assert order == ["first done", "second"]
    assert len(said) == 1 and "another run is training this candidate" in said[0]


def test_a_lease_whose_holder_stopped_renewing_is_taken_over_and_the_holder_learns_it(any_storage):
    storage, said = any_storage, []
    with lease.held(storage, KEY, said.append, ttl_s=0.8) as first:
        first.stopped.set()  # the holder hangs: no more heartbeats
        with lease.held(storage, KEY, said.append, ttl_s=0.8, poll_s=0.05) as second:
            assert second.owner != first.owner and "took over" in said[-1]
            assert not first.swap(first.token), "the presumed-dead holder can no longer renew"
            assert not second.lost.is_set()


def test_a_lost_lease_is_reported_by_the_heartbeat(any_storage):
    storage = any_storage
    with lease.held(storage, KEY, print, ttl_s=0.4) as held:
        storage.write_bytes(KEY, b'{"owner": "someone else", "ttl_s": 60}')  # taken over meanwhile
        assert held.lost.wait(5)
    assert b"someone else" in storage.read_bytes(KEY), "a lost lease is not released by its former holder"
