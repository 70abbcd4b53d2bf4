"""`kubectl ebb ui`, Ebb's web view, in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) against the real control plane and scheduler daemon:
the pages load, show the live states as the page refreshes itself, and follow a job
from RUNNABLE (held behind a DISABLED compute environment) to SUCCEEDED once it is
enabled; a tenant's view is what their RBAC allows, refused in the plugin's sentence;
nothing answers without the printed token; no browser or driver process is left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from ebb import kube
from local_stack import builders
from local_stack.batch import batch_env, unique, wait_state
from local_stack.harness import LocalCluster
from tests.e2e.test_tenant_roles import user_kubeconfig

pytestmark = pytest.mark.usefixtures("scheduler_daemon")
REFRESH_SECONDS = 1
ROLE_BINDINGS = kube.Resource(
    "rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", namespaced=True
)


class Ui:
    """A running `kubectl ebb ui`, through kubectl's plugin mechanism, as a user runs it."""

    def __init__(self, cluster: LocalCluster, kubeconfig: Path) -> None:
        env = cluster.env()
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
        self.process = subprocess.Popen(
            ["kubectl", "ebb", f"--kubeconfig={kubeconfig}", "ui"],
            env={**env, "EBB_UI_REFRESH_SECONDS": str(REFRESH_SECONDS)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("Ebb's queues: http://127.0.0.1:"), (
            line,
            self.process.stderr.read() if self.process.stderr else "",
        )
        self.url = line.split()[2]
        parts = urlsplit(self.url)
        self.base = f"{parts.scheme}://{parts.netloc}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(timeout=30) == 0


@pytest.fixture
def ui(cluster: LocalCluster) -> Iterator[Ui]:
    view = Ui(cluster, cluster.kubeconfig)
    yield view
    view.stop()


def _descendants(pid: int) -> set[int]:
    """The processes under `pid` (the driver's Chromium and its helpers), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "install chromium and chromium-driver (make test does)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    service = Service(executable_path=driver)
    chrome = webdriver.Chrome(options=options, service=service)
    assert service.process is not None
    started = {service.process.pid, *_descendants(service.process.pid)}
    assert len(started) > 1  # the driver and its browser
    try:
        yield chrome
    finally:
        started |= _descendants(service.process.pid)  # the renderers opened since
        chrome.quit()
    left = {pid for pid in started if _alive(pid)}
    assert not left, f"browser or driver processes left behind: {left}"


def text_of(browser: WebDriver, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def wait_text(
    browser: WebDriver, css: str, expected: str, timeout: float = 60, *, prefix: bool = False
) -> None:
    """Until the element at `css` reads `expected` (or starts with it, if `prefix`), with
    the page refreshing itself."""

    def shows(driver: WebDriver) -> bool:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        text = found[0].text if found else None
        return text is not None and (text.startswith(expected) if prefix else text == expected)

    WebDriverWait(browser, timeout).until(shows, f"{css} never read {expected!r}")


async def test_the_web_view_follows_a_job_from_runnable_to_succeeded(
    kube_client: kube.KubeClient, namespace: str, ui: Ui, browser: WebDriver
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=2, state="DISABLED")
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(kube.JOBS, builders.job("held", q, run_seconds=2), namespace)
        await wait_state(kube_client, namespace, "held", "RUNNABLE")

        # The overview: the queue with one job RUNNABLE, the environment DISABLED, and
        # its capacity charted as the view samples it.
        browser.get(ui.url)
        assert urlsplit(browser.current_url).query == ""  # the token became a cookie
        queue_row = f'table.queues tr[data-queue="{q}"]'
        wait_text(browser, f"{queue_row} td.runnable", "1")
        assert text_of(browser, f"{queue_row} td.environments") == ce
        ce_row = f'table.environments tr[data-environment="{ce}"]'
        assert text_of(browser, f"{ce_row} td.state") == "DISABLED"
        ce_chart = f'figure.chart[data-kind="environment"][data-name="{ce}"]'
        WebDriverWait(browser, 30).until(
            lambda driver: driver.find_elements(By.CSS_SELECTOR, ce_chart), f"no chart of {ce}"
        )
        # UNMANAGED: Ebb's autoscaler publishes no current or desired vCPUs for it.
        caption = text_of(browser, f"{ce_chart} figcaption")
        assert caption.startswith("max 2 vCPUs (current and desired: not published)"), caption
        assert browser.find_elements(By.CSS_SELECTOR, f"{ce_chart} svg polyline.max")
        q_chart = f'figure.chart[data-kind="queue"][data-name="{q}"]'
        # (A chart's last sample may be one refresh older than the tables.)
        wait_text(browser, f"{q_chart} figcaption", "runnable 1, running 0 jobs", prefix=True)

        # The job list, reached from the queue's count, filtered to its queue and state.
        browser.find_element(By.CSS_SELECTOR, f"{queue_row} td.runnable a").click()
        job_row = f'table.jobs tr[data-job="{namespace}/held"]'
        wait_text(browser, f"{job_row} td.state", "RUNNABLE")
        assert "state=RUNNABLE" in browser.current_url and f"queue={q}" in browser.current_url
        assert ce in text_of(browser, f"{job_row} td.reason")

        # The job's page: its `why` chain (the plugin's) names the disabled environment.
        browser.find_element(By.CSS_SELECTOR, f"{job_row} td.name a").click()
        wait_text(browser, "#state", "RUNNABLE")
        why = text_of(browser, ".why")
        assert why.startswith("RUNNABLE: ")
        assert f"compute environment {ce}: DISABLED" in why

        # Enabled, the environment takes the job: the open page follows it by itself.
        await kube_client.patch(kube.COMPUTE_ENVIRONMENTS, ce, {"spec": {"state": "ENABLED"}})
        wait_text(browser, "#state", "SUCCEEDED", timeout=90)
        assert text_of(browser, ".why").startswith("SUCCEEDED: ")
        attempts = browser.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")
        assert len(attempts) == 1
        assert text_of(browser, "table.attempts td.exit") == "0"

        # And the overview counts it: nothing RUNNABLE, one SUCCEEDED.
        browser.get(f"{ui.base}/")
        wait_text(browser, f"{queue_row} td.succeeded", "1")
        assert text_of(browser, f"{queue_row} td.runnable") == "0"
        assert text_of(browser, f"{ce_row} td.state") == "ENABLED"
        wait_text(browser, f"{q_chart} figcaption", "runnable 0, running 0 jobs", prefix=True)
        # The queue's chart went from one job RUNNABLE (a point above its baseline) to none.
        line = browser.find_element(By.CSS_SELECTOR, f"{q_chart} polyline.runnable")
        heights = {
            float(point.split(",")[1]) for point in str(line.get_attribute("points")).split()
        }
        assert len(heights) == 2


def test_nothing_answers_without_the_token(ui: Ui) -> None:
    for path in ("/", "/jobs", "/static/ui.js", "/?token=wrong"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{ui.base}{path}", timeout=10)
        assert refused.value.code == 401
    assert urlsplit(ui.url).hostname == "127.0.0.1"


async def test_a_tenant_sees_what_their_roles_allow(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str, browser: WebDriver
) -> None:
    """A tenant holding ebb-edit in their namespace only (a RoleBinding, as
    docs/operations.md says to bind it): their jobs are listed and explained, the queues
    and another namespace's jobs are refused in the plugin's sentence naming the role."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "wendy-ebb-edit"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "ebb-edit",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "wendy"}],
    }
    await kube_client.create(ROLE_BINDINGS, binding, namespace)  # gone with the namespace
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), state="DISABLED")
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(kube.JOBS, builders.job("mine", q), namespace)
        await wait_state(kube_client, namespace, "mine", "RUNNABLE")
        view = Ui(cluster, user_kubeconfig(cluster, "wendy", namespace))
        try:
            browser.get(view.url)
            refusals = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "main .refused")]
            assert any("you may not list job queues" in r and "ebb-view" in r for r in refusals)
            browser.find_element(By.LINK_TEXT, "Jobs").click()
            wait_text(browser, f'table.jobs tr[data-job="{namespace}/mine"] td.state', "RUNNABLE")
            browser.get(f"{view.base}/jobs/{namespace}/mine")
            why = text_of(browser, ".why")
            assert f"queue {q}: not visible to you; reading it takes ClusterRole ebb-view" in why
            browser.get(f"{view.base}/jobs?namespace=default")
            refused = text_of(browser, "main .refused")
            assert "you may not list jobs in namespace default" in refused
            assert "ebb-edit, bound by a RoleBinding in namespace default" in refused
        finally:
            view.stop()
