"""Several sluice instances in front of one pool, sharing a Redis: the scale controller
sizes the pool once from the instances' summed arrival rates (their heartbeats in Redis),
one instance leads and acts, and with redis_publish it publishes the decision."""
import json
import threading
import time

import http.client

from test_admin import call
from test_redis import redis_server  # noqa: F401  (the fixture)

import pytest

pytestmark = pytest.mark.slow  # load and timing: skipped by `make sanitize`


def load(ports, clients, seconds, path="/slow?ms=200"):
    deadline = time.monotonic() + seconds

    def run(port):
        while time.monotonic() < deadline:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", path)
            c.getresponse().read()
            c.close()
    ts = [threading.Thread(target=run, args=(ports[i % len(ports)],)) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 60)


def scale_doc(port):
    r, body = call(port, "GET", "/scale.json")
    assert r.status == 200
    return json.loads(body)


def test_two_instances_size_the_pool_once_from_their_summed_load(
        backend_factory, sluice_factory, redis_server, free_port):  # noqa: F811
    b = backend_factory("a", workers=1, worker_class="gthread", threads=32)
    admins = [free_port(), free_port()]
    ss = [sluice_factory([b], backend_opts={"workers": "8"},
                         extra="[admin]\nlisten = 127.0.0.1:%d\n[scale]\nwindow = 10s\n"
                               "[redis]\nurl = %s\n" % (admins[i], redis_server.url))
          for i in range(2)]
    # two clients on instance 0, four on instance 1: about 10 and 20 req/s; read while the
    # load is steady (after one full 10 s window), not as it ends
    t = threading.Thread(target=load, args=([ss[0].port, ss[1].port, ss[1].port], 6, 16))
    t.start()
    time.sleep(12)
    docs = [scale_doc(p) for p in admins]
    local = [json.loads(call(p, "GET", "/status.json")[1])["pool"]["admitted_rate"]["10s"]
             for p in admins]
    t.join(60)
    for d in docs:
        c = d["cluster"]
        assert c and c["instances"] == 2, d
        # the cluster's rate is the sum of both instances' (heartbeats lag up to a second)
        assert abs(c["lambda"] - sum(local)) <= 0.2 * sum(local), (c, local)
        assert d["lambda"] == c["lambda"]
        assert d["supply"] == 8  # the same backend behind both: not counted twice
    assert sorted(d["cluster"]["leader"] for d in docs) == [False, True]
    assert docs[0]["cluster"]["leader_id"] == docs[1]["cluster"]["leader_id"]


def test_the_leader_alone_acts_and_publishes_the_decision(backend_factory, sluice_factory,
                                                          redis_server, free_port):  # noqa: F811
    b = backend_factory("a", workers=1, worker_class="gthread", threads=16)
    admins = [free_port(), free_port()]
    ss = [sluice_factory([b], backend_opts={"workers": "2"},
                         extra="[admin]\nlisten = 127.0.0.1:%d\n[scale]\nwindow = 10s\n"
                               "up_for = 2s\ncooldown = 600s\nredis_publish = yes\n"
                               "[redis]\nurl = %s\n" % (admins[i], redis_server.url))
          for i in range(2)]
    # 13 s: `required` counts once the 10 s window is full (issue 18), then up_for 2 s
    load([ss[0].port, ss[1].port], 8, 13)
    docs = [scale_doc(p) for p in admins]
    leader = [d for d in docs if d["cluster"]["leader"]]
    follower = [d for d in docs if not d["cluster"]["leader"]]
    assert len(leader) == 1 and len(follower) == 1, docs
    assert leader[0]["decisions"] == 1 and follower[0]["decisions"] == 0, docs
    published = json.loads(redis_server.cli("GET", "sluice:scale"))
    assert published["decision"] == "up" and published["desired_workers"] == 3, published
