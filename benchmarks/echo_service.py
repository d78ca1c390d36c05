"""A stock BentoML service with no model, no middleware and default settings: the HTTP floor of `bentoml serve`
on this machine (issue 14's E). `bentoml serve benchmarks.echo_service:Echo`; `/classify` answers
`{"results": [{"chars": n}, ...]}`, one result per text, as our service does."""

from __future__ import annotations

import bentoml


@bentoml.service(name="tweetguard-echo", workers=1)
class Echo:
    @bentoml.api(route="/classify")
    async def classify(self, texts: list[str]) -> dict:
        return {"results": [{"chars": len(t)} for t in texts]}
