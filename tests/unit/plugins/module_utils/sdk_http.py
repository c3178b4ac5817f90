"""The real openstacksdk proxies over a stand-in HTTP transport, for the Cinder and Manila API tests.

The answers are hand-written REST bodies in the services' formats (not recordings of a cloud);
they reach the collection through openstacksdk's own proxy, resource and keystoneauth code, so
a test sees the requests the SDK really sends (method, path, query, microversion header, body).

``Lab.raw`` lists the calls the collection sent itself through ``OpenStackClient.request`` (raw
REST); the tests assert it holds only the calls openstacksdk 4.22 lacks.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode, urlsplit

import openstack
import requests

from ansible_collections.storage.mobility.plugins.module_utils import openstack as osmod
from ansible_collections.storage.mobility.plugins.module_utils.config import Backends

HOST = "http://service.test"


class Transport(requests.adapters.BaseAdapter):
    """Answers from ``answers``: {(method, path with sorted query): (status, body) or a list of them}."""

    def __init__(self, lab):
        super().__init__()
        self.lab = lab

    def send(self, request, **kwargs):
        url = urlsplit(request.url)
        path = url.path[len(urlsplit(self.lab.endpoint).path):] or "/"
        query = sorted(parse_qsl(url.query, keep_blank_values=True))
        full = path + ("?" + urlencode(query) if query else "")
        body = json.loads(request.body) if request.body else None
        version = request.headers.get("OpenStack-API-Version") or request.headers.get("X-OpenStack-Manila-API-Version")
        if version and " " in version:
            version = version.split(" ", 1)[1]
        if path in ("/", ""):
            # as the services write it: the versioned root, without a project id
            href = "%s/%s/" % (HOST, urlsplit(self.lab.endpoint).path.split("/")[1])
            status, data = 200, {"versions": [dict(v, links=[{"rel": "self", "href": href}])
                                              for v in self.lab.versions["versions"]]}
        else:
            self.lab.sent.append({"method": request.method, "path": full, "microversion": version, "body": body,
                                  "headers": dict(request.headers)})
            answer = self.lab.answers.get((request.method, full))
            if answer is None:
                self.lab.unanswered.append((request.method, full))
            if isinstance(answer, list):
                answer = answer.pop(0) if len(answer) > 1 else answer[0]
            missing = {"itemNotFound": {"code": 404, "message": "no answer for %s %s" % (request.method, full)}}
            status, data = answer or (404, missing)
        response = requests.Response()
        response.status_code = status
        response._content = b"" if data is None else json.dumps(data).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        response.reason = "stand-in"
        return response

    def close(self):
        pass


class Lab:
    """One backend, its OpenStackClient on the real SDK proxy, and what was sent."""

    def __init__(self, service, endpoint, versions, answers, driver, api_version=None):
        self.endpoint = endpoint
        self.versions = versions
        self.answers = answers
        self.sent = []
        self.raw = []
        self.unanswered = []
        attribute = osmod.SERVICES[service][0]
        # A real openstacksdk connection (as the lab's clouds.yaml: a token, the endpoint given);
        # only its HTTP transport is replaced.
        conn = openstack.connect(auth_type="admin_token", auth={"endpoint": endpoint, "token": "admin:project"},
                                 load_yaml_config=False, load_envvars=False,
                                 **{"%s_endpoint_override" % attribute: endpoint})
        conn.session.session.mount(HOST, Transport(self))
        self.proxy = getattr(conn, attribute)
        spec = {"name": "cloud", "driver": driver, "cloud": "lab"}
        if api_version:
            spec["api_version"] = api_version
        self.backend = Backends([spec]).backends[0]
        self.client = osmod.OpenStackClient(self.backend, service,
                                            connect=lambda **kwargs: type("Conn", (), {attribute: self.proxy})())
        send = self.client._send

        def raw(method, path, *args, **kwargs):
            self.raw.append((method, path))
            return send(method, path, *args, **kwargs)

        self.client._send = raw

    def requests_to(self, method, path):
        return [s for s in self.sent if (s["method"], s["path"]) == (method, path)]
