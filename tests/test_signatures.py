"""eBay digital signatures without I/O: RFC 9421's Ed25519 known answer, RFC 9530's
Content-Digest as eBay's guide shows it, eBay's reference test vectors (its README and
`ApplicationTests.java`, with the test master key that made its JWEs), and the ported
reference verifier refusing what eBay's refuses."""

from __future__ import annotations

import base64

import pytest

from tokend.ebay import signatures
from tokend.testing import ebay_verifier

# RFC 9421 Appendix B.1.4, `test-key-ed25519` (eBay's guide uses the same test keys).
ED25519_PEM = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----"""
# RFC 9421 Appendix B.1.2, `test-key-rsa-pss` (eBay signs PKCS#1 v1.5 with it).
RSA_PEM = """-----BEGIN PRIVATE KEY-----
MIIEvgIBADALBgkqhkiG9w0BAQoEggSqMIIEpgIBAAKCAQEAr4tmm3r20Wd/Pbqv
P1s2+QEtvpuRaV8Yq40gjUR8y2Rjxa6dpG2GXHbPfvMs8ct+Lh1GH45x28Rw3Ry5
3mm+oAXjyQ86OnDkZ5N8lYbggD4O3w6M6pAvLkhk95AndTrifbIFPNU8PPMO7Oyr
FAHqgDsznjPFmTOtCEcN2Z1FpWgchwuYLPL+Wokqltd11nqqzi+bJ9cvSKADYdUA
AN5WUtzdpiy6LbTgSxP7ociU4Tn0g5I6aDZJ7A8Lzo0KSyZYoA485mqcO0GVAdVw
9lq4aOT9v6d+nb4bnNkQVklLQ3fVAvJm+xdDOp9LCNCN48V2pnDOkFV6+U9nV5oy
c6XI2wIDAQABAoIBAQCUB8ip+kJiiZVKF8AqfB/aUP0jTAqOQewK1kKJ/iQCXBCq
pbo360gvdt05H5VZ/RDVkEgO2k73VSsbulqezKs8RFs2tEmU+JgTI9MeQJPWcP6X
aKy6LIYs0E2cWgp8GADgoBs8llBq0UhX0KffglIeek3n7Z6Gt4YFge2TAcW2WbN4
XfK7lupFyo6HHyWRiYHMMARQXLJeOSdTn5aMBP0PO4bQyk5ORxTUSeOciPJUFktQ
HkvGbym7KryEfwH8Tks0L7WhzyP60PL3xS9FNOJi9m+zztwYIXGDQuKM2GDsITeD
2mI2oHoPMyAD0wdI7BwSVW18p1h+jgfc4dlexKYRAoGBAOVfuiEiOchGghV5vn5N
RDNscAFnpHj1QgMr6/UG05RTgmcLfVsI1I4bSkbrIuVKviGGf7atlkROALOG/xRx
DLadgBEeNyHL5lz6ihQaFJLVQ0u3U4SB67J0YtVO3R6lXcIjBDHuY8SjYJ7Ci6Z6
vuDcoaEujnlrtUhaMxvSfcUJAoGBAMPsCHXte1uWNAqYad2WdLjPDlKtQJK1diCm
rqmB2g8QE99hDOHItjDBEdpyFBKOIP+NpVtM2KLhRajjcL9Ph8jrID6XUqikQuVi
4J9FV2m42jXMuioTT13idAILanYg8D3idvy/3isDVkON0X3UAVKrgMEne0hJpkPL
FYqgetvDAoGBAKLQ6JZMbSe0pPIJkSamQhsehgL5Rs51iX4m1z7+sYFAJfhvN3Q/
OGIHDRp6HjMUcxHpHw7U+S1TETxePwKLnLKj6hw8jnX2/nZRgWHzgVcY+sPsReRx
NJVf+Cfh6yOtznfX00p+JWOXdSY8glSSHJwRAMog+hFGW1AYdt7w80XBAoGBAImR
NUugqapgaEA8TrFxkJmngXYaAqpA0iYRA7kv3S4QavPBUGtFJHBNULzitydkNtVZ
3w6hgce0h9YThTo/nKc+OZDZbgfN9s7cQ75x0PQCAO4fx2P91Q+mDzDUVTeG30mE
t2m3S0dGe47JiJxifV9P3wNBNrZGSIF3mrORBVNDAoGBAI0QKn2Iv7Sgo4T/XjND
dl2kZTXqGAk8dOhpUiw/HdM3OGWbhHj2NdCzBliOmPyQtAr770GITWvbAI+IRYyF
S7Fnk6ZVVVHsxjtaHy1uJGFlaZzKR4AGNaUTOJMs6NadzCmGPAxNQQOCqoUjn4XR
rOjr9w349JooGXhOxbu8nOxX
-----END PRIVATE KEY-----"""
# eBay's reference repository: the master key its test JWEs are sealed with, and the JWEs.
EBAY_TEST_MASTER_KEY = base64.b64decode("uSA8lSm4fWRrDs8JvjS/Y6D5Ohp3mIKC4AhN/nBaGxs=")
ED25519_JWE = (
    "eyJ6aXAiOiJERUYiLCJlbmMiOiJBMjU2R0NNIiwidGFnIjoiSXh2dVRMb0FLS0hlS0Zoa3BxQ05CUSIsImFsZy"
    "I6IkEyNTZHQ01LVyIsIml2IjoiaFd3YjNoczk2QzEyOTNucCJ9.2o02pR9SoTF4g_5qRXZm6tF4H52TarilIAKx"
    "oVUqjd8.3qaF0KJN-rFHHm_P.AMUAe9PPduew09mANIZ-O_68CCuv6EIx096rm9WyLZnYz5N1WFDQ3jP0RBkbaOt"
    "QZHImMSPXIHVaB96RWshLuJsUgCKmTAwkPVCZv3zhLxZVxMXtPUuJ-ppVmPIv0NzznWCOU5Kvb9Xux7ZtnlvLXgw"
    "OFEix-BaWNomUAazbsrUCbrp514GIea3butbyxXLNi6R9TJUNh8V2uan-optT1MMyS7eMQnVGL5rYBULk.9K5ucU"
    "qAu0DqkkhgubsHHw")
RSA_JWE = (
    "eyJ6aXAiOiJERUYiLCJlbmMiOiJBMjU2R0NNIiwidGFnIjoiYVMxUlZybG9UdXdRaDBuRHZDOGJFZyIsImFsZy"
    "I6IkEyNTZHQ01LVyIsIml2IjoiYVRwdE5ubGJqalJCR2dQQiJ9.6ZfgB6dRVjMqrney1nOlJpPm11tDziWFk2Ru"
    "hwWrCyE.6lKneGYFN_148y3C.7Z0IMkg0e1dBFq4K5QmBoLi6V_cXTDF5rLyFss16j2IJMtdIknHHQn49tmSzjt"
    "M1gS04ueruCdBWixuPdzWOpJk-F6BkfslIDvP10WXesb0chGgPqROzWPzYJtZLJDDACFeqLBSRC5aevBYNZIBtb"
    "woOZd9Q0JUAOhaLkeOmJEbnYoJyfDY-XLB9LgySNsE9GM2lo72NmAnjTxFal3Icnqd7pVhbhG5gFvPJbNzZJgNX"
    "DKOxV3qJ4kkM6RIdxfuoqXe-8VTVOCUee4P5Ce6bw7wTFrpsZIiaKVb10r4tp7mf90Y2VyxTWMGJVtslI44dA4s8"
    "kz8lM_b9GE2jx8MYNOOqt7bJt_ATf87LiwSQ56SPdz0bEpWwYn8gqifj9SjtCyx4EOYQIHFIqbS0oUn8T_TIpvsS"
    "gD3RNP2jlFvxZI-9fHOOjhCqQ2_dyAWPWkLPtHERfwPUy5FDR3naKlucjfOKXzuraIqyX8pcZQbkq7ESiyTxZU-t"
    "rkcvEDquOpJLWElxACYKhCBns00oG-TcOEzrAIBwXZlBMdQR7rLM3QmT3K4a-Yu1VBQ2bl4.FM42Am9AoxNanBs3"
    "cFCK0w")
HELLO = b'{"hello": "world"}'
HELLO_DIGEST = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
CREATED = 1658440308  # what eBay's reference signer fixes `created` to
EBAY_URI = "http://localhost:8080/verifysignature"
EBAY_ED25519_SIGNATURE = ("sig1=:ZMUpAejnqrt6POSx02ltx3cT9YODV2r+Cem/BKOagDSfztKOtCsjP/MxZqmY"
                          "+FVJ3/8E4BL76T9Fjty8oJnsAw==:")
EBAY_RSA_SIGNATURE = (
    "sig1=:iw11s/s1Vh6/+U5YuJaLQdC+bWNpxWWrKZZ0l3QUv9/s+/0OFKrqg5MVxB0wejD7yRZ6kWcGNcAtIDbbdR"
    "llaVMDdjLWnXb043t7fPoi2AMOSMtnf4xktAmhjGsSHEjIrr1q48vl8OGz8hGAGpLY5xaoCdzTaTFz8CZKPt0Rm"
    "WKXrAuFBobHBgPNfRcH9nTcsqVEuxCxWXZyAL8gb4arS/NJRjrTwBUBxfyPq1sZJR7aZosLEAXLN/2MEfhtmf5n"
    "U+EYC0BqzluiaYj46eEZM/AAiqnFEZ876sfk2LjXOEFigxCOqWmSqrHzIVaW4/45+vFPrjNY3YOHHMvu9W+UnA==:")


def test_rfc9421_b26_ed25519_known_answer():
    key, cipher = signatures.load_private_key(ED25519_PEM)
    assert cipher == signatures.ED25519
    params = signatures.signature_params(
        ["date", "@method", "@path", "@authority", "content-type", "content-length"],
        1618884473, keyid="test-key-ed25519")
    base = signatures.signature_base([
        ("date", "Tue, 20 Apr 2021 02:07:55 GMT"), ("@method", "POST"), ("@path", "/foo"),
        ("@authority", "example.com"), ("content-type", "application/json"),
        ("content-length", "18")], params)
    assert base == (
        b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@method": POST\n"@path": /foo\n'
        b'"@authority": example.com\n"content-type": application/json\n'
        b'"content-length": 18\n"@signature-params": ("date" "@method" "@path" '
        b'"@authority" "content-type" "content-length");created=1618884473'
        b';keyid="test-key-ed25519"')
    assert base64.b64encode(signatures.sign_base(key, base)) == (
        b"wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==")


def test_content_digest_as_ebays_guide_shows_it():
    assert signatures.content_digest(HELLO) == HELLO_DIGEST
    assert signatures.check_digest(HELLO_DIGEST) == HELLO_DIGEST
    for bad in ("sha-512=:" + "A" * 86 + "==:", "sha-256=:short=:", HELLO_DIGEST[:-1], ""):
        with pytest.raises(signatures.SigningError):
            signatures.check_digest(bad)


@pytest.mark.parametrize(("pem", "jwe", "expected"), [
    (ED25519_PEM, ED25519_JWE, EBAY_ED25519_SIGNATURE),
    (RSA_PEM, RSA_JWE, EBAY_RSA_SIGNATURE),
])
def test_ebay_reference_vectors_byte_for_byte(pem, jwe, expected):
    key, _ = signatures.load_private_key(pem)
    headers = signatures.headers(key, jwe, signatures.target("POST", EBAY_URI),
                                 created=CREATED, digest=signatures.content_digest(HELLO))
    assert headers == {
        "Content-Digest": HELLO_DIGEST, "x-ebay-signature-key": jwe,
        "Signature-Input": 'sig1=("content-digest" "x-ebay-signature-key" "@method" "@path" '
                           '"@authority");created=1658440308',
        "Signature": expected}
    ebay_verifier.verify(EBAY_TEST_MASTER_KEY, HELLO, _lower(headers), EBAY_URI, "POST")


def test_the_reference_jwe_carries_the_rfc_test_key():
    key, _ = signatures.load_private_key(ED25519_PEM)
    claims = ebay_verifier.open_jwe(EBAY_TEST_MASTER_KEY, ED25519_JWE)
    assert claims["cipher"] == "Ed25519"
    assert claims["pkey"] == signatures.public_key_text(key)
    with pytest.raises(ebay_verifier.VerificationError):
        ebay_verifier.open_jwe(b"\x01" * 32, ED25519_JWE)


def _lower(headers):
    return {name.lower(): value for name, value in headers.items()}


def _signed(method="POST", url=EBAY_URI, body=HELLO):
    key, _ = signatures.load_private_key(ED25519_PEM)
    digest = signatures.content_digest(body) if body else None
    return _lower(signatures.headers(key, ED25519_JWE, signatures.target(method, url),
                                     created=CREATED, digest=digest))


@pytest.mark.parametrize(("change", "reason"), [
    (lambda h, r: r.update(body=b'{"hello": "World"}'), "Content-Digest value is invalid"),
    (lambda h, r: r.update(method="PUT"), "Signature invalid"),
    (lambda h, r: r.update(uri="http://localhost:8080/verifysignaturf"), "Signature invalid"),
    (lambda h, r: r.update(uri="http://localhost:8081/verifysignature"), "Signature invalid"),
    (lambda h, r: h.update({"x-ebay-signature-key": RSA_JWE}), "Signature invalid"),
    (lambda h, r: h.update({"x-ebay-signature-key": ED25519_JWE[:-4] + "AAAA"}),
     "Error decrypting the JWE"),
    (lambda h, r: h.pop("signature"), "Signature header missing"),
    (lambda h, r: h.update(signature="sig1=:invalid:"), "Signature not a valid Base64"),
    (lambda h, r: h.update(signature="invalid"), "Signature header invalid"),
    (lambda h, r: h.pop("content-digest"), "Header content-digest not included"),
    (lambda h, r: h.update({"signature-input": "sig1=(\"@method\")"}), "Invalid signature-input"),
    (lambda h, r: h.update({"signature-input": h["signature-input"].replace("@path", "@when")}),
     "Unknown pseudo header @when"),
])
def test_the_verifier_refuses_what_ebays_refuses(change, reason):
    headers, request = _signed(), {"body": HELLO, "uri": EBAY_URI, "method": "POST"}
    ebay_verifier.verify(EBAY_TEST_MASTER_KEY, request["body"], headers, request["uri"],
                         request["method"])
    change(headers, request)
    with pytest.raises(ebay_verifier.VerificationError, match=reason):
        ebay_verifier.verify(EBAY_TEST_MASTER_KEY, request["body"], headers, request["uri"],
                             request["method"])


def test_without_a_body_no_digest_is_signed():
    headers = _signed("GET", "https://apiz.ebay.com/sell/finances/v1/transaction?limit=20",
                      body=b"")
    assert "content-digest" not in headers
    assert headers["signature-input"] == (
        'sig1=("x-ebay-signature-key" "@method" "@path" "@authority");created=1658440308')
    ebay_verifier.verify(EBAY_TEST_MASTER_KEY, b"", headers,
                         "https://apiz.ebay.com/sell/finances/v1/transaction?limit=20", "GET")


@pytest.mark.parametrize(("url", "path", "authority"), [
    ("https://apiz.ebay.com/sell/finances/v1/payout", "/sell/finances/v1/payout",
     "apiz.ebay.com"),
    ("https://APIZ.eBay.com:443/a%20b/%C3%A9?x=%2F#frag", "/a b/\u00e9", "apiz.ebay.com"),
    ("http://127.0.0.1:8443", "/", "127.0.0.1:8443"),
    ("http://[::1]:9000/x;y=1", "/x;y=1", "[::1]:9000"),
])
def test_target_is_what_the_reference_computes(url, path, authority):
    assert signatures.target("GET", url) == signatures.Target("GET", path, authority)


@pytest.mark.parametrize(("method", "url"), [
    ("get", "https://apiz.ebay.com/x"), ("POST", "/relative"), ("POST", "ftp://h/x"),
    ("POST", "https://h/a b"), ("POST", "https://h:99999/x"), ("", "https://h/x"),
])
def test_bad_requests_are_refused(method, url):
    with pytest.raises(signatures.SigningError):
        signatures.target(method, url)


def test_keys_load_as_pem_or_ebays_bare_base64_and_nothing_else():
    key, cipher = signatures.load_private_key(RSA_PEM)
    assert cipher == signatures.RSA
    pem = signatures.private_key_text(key)
    bare = "".join(pem.splitlines()[1:-1])
    assert signatures.load_private_key(bare)[1] == signatures.RSA
    for bad in ("", "not a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                signatures.public_key_text(key)):
        with pytest.raises(signatures.KeyFormatError) as caught:
            signatures.load_private_key(bad)
        assert bad[:20] not in str(caught.value) or not bad
