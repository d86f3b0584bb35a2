"""The Nuclio dashboard API on a real daemon, driven by nuclio-jupyter's own deploy code (the
``nuclio`` package) over real sockets: what ``%nuclio deploy`` and ``nuclio.deploy_file`` do."""

from __future__ import annotations

import base64

import httpx
import nuclio
import pytest
from nuclio.triggers import CronTrigger, HttpTrigger
from nuclio.utils import DeployError

from sluice.client import Client
from tests.conftest import ROOT, Daemon

pytestmark = pytest.mark.slow

SCORER = """
import os

def handler(context, event):
    return f"{os.environ['GREETING']}, {event.body.decode()} (v1)"
"""


def dashboard(daemon: Daemon) -> str:
    return Client(daemon.api, daemon.token).nuclio_dashboard_url()


def http_spec(**env: str) -> nuclio.ConfigSpec:
    spec = nuclio.ConfigSpec(env=env)
    spec.add_trigger("web", HttpTrigger(workers=1))
    return spec


def test_deploy_code_creates_then_updates_a_function(daemon: Daemon):
    url = dashboard(daemon)
    (address,) = nuclio.deploy_code(SCORER, name="greeter", project="demo", dashboard_url=url,
                                    spec=http_spec(GREETING="hello"))
    assert address.startswith("127.0.0.1:")
    assert httpx.post(f"http://{address}/", content=b"ada").text == "hello, ada (v1)"

    # the platform's own view: a sluice function like any other, labelled with its project
    status = httpx.get(f"{daemon.api}/api/functions/greeter").json()
    assert status["status"]["state"] == "ready"
    assert status["spec"]["labels"]["nuclio.io/project-name"] == "demo"

    # the second deploy of the name is an update (PUT): same port, new code
    (again,) = nuclio.deploy_code(SCORER.replace("(v1)", "(v2)"), name="greeter",
                                  project="demo", dashboard_url=url,
                                  spec=http_spec(GREETING="hi"))
    assert again == address
    assert httpx.post(f"http://{address}/", content=b"ada").text == "hi, ada (v2)"
    document = httpx.get(f"{daemon.api}/nuclio/api/functions/greeter").json()
    assert document["status"]["state"] == "ready"
    assert document["status"]["httpPort"] == int(address.split(":")[1])
    assert any("generation 2" in entry["message"] for entry in document["status"]["logs"])
    assert document["spec"]["env"] == [{"name": "GREETING", "value": "hi"}]


def test_deploy_file_of_a_notebook(daemon: Daemon):
    address = nuclio.deploy_file(str(ROOT / "examples" / "notebooks" / "scorer.ipynb"),
                                 name="file-scorer", project="demo",
                                 dashboard_url=dashboard(daemon))
    assert address.startswith("127.0.0.1:")  # deploy_file answers the external address
    reply = httpx.post(f"http://{address}/", json={"amount": 900})
    assert reply.json() == {"risk": 0.9, "flagged": True, "explored": False}
    addresses = httpx.get(f"{daemon.api}/nuclio/api/external_ip_addresses").json()
    assert addresses == {"externalIPAddresses": {"addresses": ["127.0.0.1"]}}


def test_projects_and_listing(daemon: Daemon):
    url = dashboard(daemon)
    nuclio.deploy_code(SCORER, name="in-demo", project="demo", dashboard_url=url,
                       spec=http_spec(GREETING="x"))
    nuclio.deploy_code(SCORER, name="in-other", project="other", dashboard_url=url,
                       spec=http_spec(GREETING="x"))
    projects = httpx.get(f"{daemon.api}/nuclio/api/projects").json()
    assert {"default", "demo", "other"} <= set(projects)
    assert projects["demo"]["metadata"]["name"] == "demo"

    listed = httpx.get(f"{daemon.api}/nuclio/api/functions",
                       headers={"x-nuclio-project-name": "demo"}).json()
    assert list(listed) == ["in-demo"]

    # a name already used in another project is refused by the client, as with Nuclio
    with pytest.raises(DeployError, match="different project"):
        nuclio.deploy_code(SCORER, name="in-demo", project="other", dashboard_url=url)

    auth = {"Authorization": f"Bearer {daemon.token}"}
    bad = httpx.post(f"{daemon.api}/nuclio/api/projects", headers=auth,
                     json={"metadata": {"name": "Not_Valid"}, "spec": {}})
    assert bad.status_code == 400 and "metadata.name" in bad.json()["error"]
    busy = httpx.request("DELETE", f"{daemon.api}/nuclio/api/projects", headers=auth,
                         json={"metadata": {"name": "demo"}})
    assert busy.status_code == 409 and "in-demo" in busy.json()["error"]

    gone = httpx.request("DELETE", f"{daemon.api}/nuclio/api/functions", headers=auth,
                         json={"metadata": {"name": "in-demo"}})
    assert gone.status_code == 204
    assert httpx.get(f"{daemon.api}/nuclio/api/functions/in-demo").status_code == 404
    assert httpx.get(f"{daemon.api}/api/functions/in-demo").status_code == 404


@pytest.mark.parametrize(("code", "triggers", "reason"), [
    ("def handler(context, event:\n    pass\n", None, "SyntaxError"),
    ("def handle(context, event):\n    return 1\n", None, "handler"),
    ("def handler(context, event):\n    return 1\n", {"tick": CronTrigger(schedule="61 * * * *")},
     "spec.triggers.tick"),
], ids=["syntax-error", "missing-handler", "bad-trigger"])
def test_deploy_errors_come_back_as_state_error(daemon: Daemon, code: str, triggers: dict | None,
                                                reason: str):
    spec = nuclio.ConfigSpec()
    for name, trigger in (triggers or {}).items():
        spec.add_trigger(name, trigger)
    with pytest.raises(DeployError, match="cannot deploy function 'broken'"):
        nuclio.deploy_code(code, name="broken", project="demo", dashboard_url=dashboard(daemon),
                           spec=spec)
    status = httpx.get(f"{daemon.api}/nuclio/api/functions/broken").json()["status"]
    assert status["state"] == "error"
    assert reason in status["message"]
    assert any(entry["level"] == "error" and reason in entry["message"]
               for entry in status["logs"])


def test_a_failed_deploy_gives_way_to_a_later_one_through_sluices_own_api(
        daemon: Daemon, tmp_path):
    with pytest.raises(DeployError):
        nuclio.deploy_code("def handle(context, event):\n    return 1\n", name="fixed",
                           project="demo", dashboard_url=dashboard(daemon), spec=http_spec())
    handler = tmp_path / "fixed.py"
    handler.write_text("def handler(context, event):\n    return 'fixed'\n")
    daemon.cli("deploy", str(handler), "--name", "fixed")
    status = httpx.get(f"{daemon.api}/nuclio/api/functions/fixed").json()["status"]
    assert status["state"] == "ready" and status["message"] == ""
    assert httpx.get(f"http://127.0.0.1:{status['httpPort']}/").text == "fixed"


def test_writes_need_the_token(daemon: Daemon, monkeypatch: pytest.MonkeyPatch):
    config = {"metadata": {"name": "sneaky"},
              "spec": {"handler": "main:handler", "build": {"functionSourceCode":
                       base64.b64encode(b"def handler(c, e):\n    return 1\n").decode()}}}
    for auth in [None, ("sluice", "wrong")]:
        refused = httpx.post(f"{daemon.api}/nuclio/api/functions", json=config, auth=auth)
        assert refused.status_code == 401 and "token" in refused.json()["error"]
    assert httpx.get(f"{daemon.api}/nuclio/api/functions/sneaky").status_code == 404
    # nuclio-jupyter sends V3IO_ACCESS_KEY as a session cookie: the token works there too
    monkeypatch.setenv("V3IO_ACCESS_KEY", daemon.token)
    (address,) = nuclio.deploy_code("def handler(context, event):\n    return 'ok'\n",
                                    name="keyed", project="demo",
                                    dashboard_url=f"{daemon.api}/nuclio", spec=http_spec())
    assert httpx.get(f"http://{address}/").text == "ok"


def test_nuclio_clients_pointed_at_sluices_own_api_are_told_where_to_go(daemon: Daemon):
    config = {"apiVersion": "nuclio.io/v1", "metadata": {"name": "x"}, "spec": {}}
    wrong = httpx.post(f"{daemon.api}/api/functions", json=config, headers=daemon.headers)
    assert wrong.status_code == 400
    assert f"{daemon.api}/nuclio" in wrong.json()["error"]
    projects = httpx.get(f"{daemon.api}/api/projects")
    assert projects.status_code == 404 and "/nuclio" in projects.json()["error"]
    with pytest.raises(OSError, match="404"):
        nuclio.deploy_code("def handler(c, e):\n    return 1\n", name="x", project="demo",
                           dashboard_url=daemon.api)
