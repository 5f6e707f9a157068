"""Shared fixtures: devices, one emulator for the session, fresh ones for tests that need their own, and
what the runner tests need, fetched on first use."""
import contextlib

import pytest

from connector.emulator import Emulator, make_devices
from pipelines.runners import fetching, prism


@pytest.fixture(scope="session")
def devices():
    """A handful of device dicts {productKey, deviceName, deviceSecret}."""
    return make_devices(4, product_key="pkTest00001")


@pytest.fixture(scope="session")
def emulator(devices):
    """The session's emulator, default limits; tests that change it use clean_emulator."""
    with Emulator(devices) as running:
        yield running


def reset_around(emulator):
    """Yield the emulator with no messages, counts or faults and its limits as started, and reset it
    again afterwards, so that what one test sets never reaches another."""
    emulator.reset()
    yield emulator
    emulator.reset()


@pytest.fixture
def clean_emulator(emulator):
    """The session emulator, reset around the test."""
    yield from reset_around(emulator)


@pytest.fixture
def fresh_emulator(devices):
    """A factory for emulators of a test's own: fresh_emulator(token_ttl=1, db=path, ...)."""
    started = []

    def start(**options):
        options.setdefault("devices", devices)
        started.append(Emulator(**options).start())
        return started[-1]

    yield start
    for running in started:
        running.close()


@pytest.fixture(scope="session")
def worker_pool():
    """An external SDK worker pool for PortableRunner tests (the path Flink and Dataflow take)."""
    from worker_pool import WorkerPool

    pool = WorkerPool()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def runner_artifacts(pytestconfig):
    """What the runner tests need (Flink's job server and distribution, Prism, Beam SQL, Kafka), fetched
    once per session before the first of them runs, by `python -m pipelines.runners fetch all`'s own
    code: cached in ~/.apache_beam/cache, under the fetch lock, each line it fetches or finds printed.
    A part that cannot be fetched (java, mvn or go missing) is said in one line; its tests then skip,
    or fail where runner tests are required (runner_support)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\nrunner tests: fetching what they need, once (python -m pipelines.runners fetch all)")
        try:
            fetching.fetch("all", log=lambda line: print(f"  {line}"))
        except fetching.FetchFailed:
            print("runner tests: not all of it could be fetched (above); the tests that need it say so")


@pytest.fixture(autouse=True)
def _fetched_for_runner_tests(request):
    """A runner test (marked `runners`) gets what it needs on first use; other tests fetch nothing."""
    if request.node.get_closest_marker("runners"):
        request.getfixturevalue("runner_artifacts")


def pytest_report_header(config):
    if not prism.streams_in_real_time():
        return (f"prism_streaming tests deselected: Beam {prism.BEAM_VERSION}'s Prism has no real processing time "
                f"(Beam {'.'.join(map(str, prism.REAL_TIME_SINCE))} on) and loses stateful streaming records "
                "(docs/runners.md)")
    return None


def pytest_collection_modifyitems(config, items):
    """The sink's streaming on Prism needs Beam 2.66 or newer: before, those tests are deselected (counted
    as such, and the header says why), not skipped."""
    if prism.streams_in_real_time():
        return
    deselected = [item for item in items if item.get_closest_marker("prism_streaming")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("prism_streaming")]
