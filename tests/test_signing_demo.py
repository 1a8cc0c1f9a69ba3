"""`tokend demo` shows a signed Finances call for a seller in the EU: the key made by the
simulator's createSigningKey, the signature by tokend, the verdict by the simulator's
port of eBay's reference verifier."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest
from proc import env

pytestmark = pytest.mark.timeout(90)


async def test_the_demo_prints_a_verified_signed_call() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokend", "demo", "--port", "0", "--seconds", "30",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env())
    try:
        seen = ""
        async with asyncio.timeout(60):
            while "Signature-Input:" not in seen:
                line = (await proc.stdout.readline()).decode()
                assert line, f"the demo ended without a signed call:\n{seen[-2000:]}"
                seen += line
        call = seen[seen.index("signed call"):]
        assert "GET /sell/finances/v1/transaction" in call and "(EBAY_DE)" in call
        assert "eBay says 200" in call, call
        assert ('Signature-Input: sig1=("x-ebay-signature-key" "@method" "@path" '
                '"@authority");created=') in call
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await proc.communicate()
    assert proc.returncode == 0
