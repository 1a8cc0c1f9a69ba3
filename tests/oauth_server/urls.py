"""The toolkit's endpoints under /o/, plus a form-less sign-in for the test user."""

from django.contrib import auth
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def sign_in(request: HttpRequest) -> HttpResponse:
    user = auth.authenticate(request, username=request.POST.get("username"),
                             password=request.POST.get("password"))
    if user is None:
        return HttpResponse("who?", status=403)
    auth.login(request, user)
    return HttpResponse("signed in")


def ping(_request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("login/", sign_in),
    path("ping/", ping),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
]
