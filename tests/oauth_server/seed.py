"""Creates the test user and the client applications; prints nothing, exits 0.

Usage: python -m oauth_server.seed USER PASSWORD REDIRECT_URI NAME:TYPE:SECRET ...
where TYPE is confidential or public (a public client's SECRET is ignored).
"""

import os
import sys

import django


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oauth_server.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from oauth2_provider import models

    username, password, redirect_uri, *clients = argv
    get_user_model().objects.create_user(username=username, password=password)
    application = models.get_application_model()
    for client in clients:
        name, kind, secret = client.split(":", 2)
        application.objects.create(
            name=name, client_id=name, client_secret=secret if kind == "confidential" else "",
            client_type=kind, redirect_uris=redirect_uri, skip_authorization=True,
            authorization_grant_type=application.GRANT_AUTHORIZATION_CODE,
            algorithm="",
        )


if __name__ == "__main__":
    main(sys.argv[1:])
