"""A paste filter of the OpenStack lab: version discovery without a token, as on a cloud with Keystone.

keystoneauth (and so openstacksdk) reads a service's versioned root (``/v3/``, ``/v2/``) without
a token to learn its microversions; openstacksdk needs that for the calls that check a
microversion first (Cinder's ``delete_volume`` asks whether 3.23 is there, a migration to a
cluster requires 3.16). The ``noauth`` middleware of Cinder and Manila answers any request
without a token with ``204 No Content`` (its login handshake), which keystoneauth cannot read.
This filter, put before ``noauth`` in the lab's api-paste.ini, gives exactly that request (a
``GET`` of the versioned root without a token) the lab's token, so the API answers it with its
version document; every other request passes unchanged.
"""


def filter_factory(global_conf, **local_conf):
    def wrap(app):
        def middleware(environ, start_response):
            if (environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO", "") in ("", "/")
                    and "HTTP_X_AUTH_TOKEN" not in environ):
                environ["HTTP_X_AUTH_TOKEN"] = "admin:admin"
            return app(environ, start_response)
        return middleware
    return wrap
