"""The status page's one stylesheet and one tiny script, and the CSP that admits exactly them.

Both are inlined (one request, works offline and behind any path prefix) and admitted by their
sha256 hashes rather than by ``'unsafe-inline'``: an injected ``<script>`` or ``style="..."``
that escaping somehow missed would still be refused by the browser. The hashes are computed
here from the very strings the page embeds, so editing either cannot leave a stale hash.

The script keeps no state of its own: it reloads the page every ``data-refresh`` seconds (the
poll interval, at least 2 s) with the scroll position carried through ``sessionStorage``, and
rewrites every ``<time datetime>`` as "3 min ago" (the server renders absolute UTC times, so
the cached part of the page never goes stale and the page still reads right without script).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

STYLE: Final = """\
:root{color-scheme:light dark;--bg:#f5f6f8;--card:#fff;--fg:#16191d;--mut:#5d6671;\
--line:#dfe3e8;--grid:#eef0f3;--s0:#2563eb;--s1:#e8590c;--s2:#0c9f6e;--s3:#a21caf;\
--bad:#d62d2d;--q:#b45309;--t:#2563eb;--d:#7c3aed;--ok:#15803d;--f:#d62d2d;--c:#6b7280;\
--u:#a16207}
@media (prefers-color-scheme:dark){:root{--bg:#0e1116;--card:#161a21;--fg:#e5e8ec;\
--mut:#9aa3ae;--line:#2a3039;--grid:#222831;--s0:#6ea0ff;--s1:#ff9a52;--s2:#3ccf97;\
--s3:#e37ef0;--bad:#ff6b6b;--q:#f0a53a;--t:#6ea0ff;--d:#b491ff;--ok:#4ccb76;--f:#ff6b6b;\
--c:#9aa3ae;--u:#e0b341}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,\
"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;font-variant-numeric:tabular-nums}
a{color:var(--s0)}
.top{padding:14px 20px 10px;border-bottom:1px solid var(--line);background:var(--card)}
h1{font-size:18px;margin:0 0 6px;font-weight:650}
h1 small{font-weight:400;color:var(--mut);font-size:13px;margin-left:6px}
.hl{display:flex;flex-wrap:wrap;gap:4px 18px;margin:0;color:var(--mut)}
.hl b{color:var(--fg);font-weight:600}
.hl .up{color:var(--ok)}.hl .dn{color:var(--bad)}
nav{margin-top:6px;display:flex;flex-wrap:wrap;gap:4px 14px}
main{padding:6px 20px 24px;max-width:1880px}
h2{font-size:15px;margin:18px 0 8px;display:flex;align-items:center;gap:8px}
h2 span{color:var(--mut);font-weight:400}
.g{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,330px),1fr));gap:12px}
.r{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--c);\
border-radius:8px;padding:10px 12px;min-width:0}
.r h3{margin:0;font-size:15px;display:flex;gap:8px;align-items:baseline;font-weight:600}
.n{overflow-wrap:anywhere;flex:1;min-width:0}
.p{font-size:12px;font-weight:600;padding:1px 8px;border-radius:10px;white-space:nowrap;\
color:var(--c);border:1px solid currentColor}
.p::before{content:"\\25CF\\00A0"}
.queued{border-left-color:var(--q)}.queued .p,h2.queued::before{color:var(--q)}
.training{border-left-color:var(--t)}.training .p,h2.training::before{color:var(--t)}
.deploying{border-left-color:var(--d)}.deploying .p,h2.deploying::before{color:var(--d)}
.succeeded{border-left-color:var(--ok)}.succeeded .p,h2.succeeded::before{color:var(--ok)}
.failed{border-left-color:var(--f)}.failed .p,h2.failed::before{color:var(--f)}
.cancelled .p,h2.cancelled::before{color:var(--c)}
.unknown{border-left-color:var(--u)}.unknown .p,h2.unknown::before{color:var(--u)}
h2::before{content:"\\25CF";color:var(--c)}
.s{margin:2px 0 6px;color:var(--mut);font-size:12px;overflow-wrap:anywhere}
.i{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11px}
.pr{display:flex;align-items:center;gap:8px;font-size:12px;color:var(--mut);margin:4px 0}
progress{flex:0 1 120px;min-width:60px;height:6px;appearance:none;border:0;\
border-radius:3px;background:var(--grid);overflow:hidden}
progress::-webkit-progress-bar{background:var(--grid)}
progress::-webkit-progress-value{background:var(--t)}
progress::-moz-progress-bar{background:var(--t)}
dl{display:flex;flex-wrap:wrap;gap:2px 14px;margin:4px 0}
dl div{display:flex;gap:5px;align-items:baseline;min-width:0}
dt{color:var(--mut);font-size:12px;overflow-wrap:anywhere}dd{margin:0;font-weight:600}
.x{color:var(--bad)}
svg{display:block;width:100%;height:auto;margin-top:14px;overflow:visible;\
border-top:1px solid var(--grid);border-bottom:1px solid var(--grid)}
.l{fill:none;stroke-width:1.6;stroke-linejoin:round;stroke-linecap:round}
.s0{stroke:var(--s0)}.s1{stroke:var(--s1);stroke-dasharray:5 3}.s2{stroke:var(--s2)}\
.s3{stroke:var(--s3);stroke-dasharray:2 2}
.o{fill:var(--card);stroke:var(--bad);stroke-width:2}path.o{fill:var(--bad);stroke:none}
.nf{stroke:var(--bad);stroke-width:2;stroke-linecap:round}
.k{display:flex;flex-wrap:wrap;gap:2px 12px;font-size:12px;color:var(--mut);margin:2px 0 0}
.k i{display:inline-block;width:16px;margin-right:4px;vertical-align:middle;\
border-top:2px solid var(--s0)}
.k .k1{border-top:2px dashed var(--s1)}.k .k2{border-top-color:var(--s2)}\
.k .k3{border-top:2px dotted var(--s3)}
.k em{font-style:normal;margin-left:auto}
.f{margin:6px 0 0;font-size:12px;color:var(--mut)}
.e{color:var(--mut);padding:18px 0}
footer{padding:0 20px 20px;color:var(--mut);font-size:12px}
"""

SCRIPT: Final = """\
(()=>{const d=document,s=sessionStorage,k="scroll "+location.href;\
history.scrollRestoration="manual";const y=s.getItem(k);\
if(y!==null){s.removeItem(k);scrollTo(0,+y)}\
const a=t=>{const x=(Date.now()-t)/1e3;return x<5?"just now":x<60?Math.round(x)+" s ago":\
x<3600?Math.round(x/60)+" min ago":x<86400?Math.round(x/3600)+" h ago":\
Math.round(x/86400)+" d ago"};\
const u=()=>{for(const e of d.querySelectorAll("time[datetime]")){const t=Date.parse(e.dateTime);\
if(!isNaN(t)){if(!e.title)e.title=e.textContent;e.textContent=a(t)}}};\
u();setInterval(u,5e3);\
const r=()=>{if(d.hidden){d.addEventListener("visibilitychange",r,{once:true});return}\
s.setItem(k,String(scrollY));location.reload()};\
setTimeout(r,Math.max(2,+d.body.dataset.refresh||60)*1e3)})();"""


def sha256_source(text: str) -> str:
    """A CSP hash source: ``'sha256-<base64 of the digest of the UTF-8 text>'``."""
    digest = hashlib.sha256(text.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        f"style-src {sha256_source(STYLE)}",
        f"script-src {sha256_source(SCRIPT)}",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
