"""An AnsweredIndex (workers/answered.py) kept current from the results topic, for any worker.

The reading is pipeline/cache_feed.py's ResultsFeed, the one the routers use: every partition,
from a lookback. It lives here, in the app layer, because workers never import pipeline/.
"""

from __future__ import annotations

import logging

from pipeline.cache_feed import ResultsFeed
from workers.answered import AnsweredIndex

log = logging.getLogger(__name__)


def answered_feed(bootstrap: str, results_topic: str, *, lookback_s: float,
                  warmup_s: float) -> tuple[AnsweredIndex, ResultsFeed]:
    """The index and its running feed, caught up (or `warmup_s` spent) when returned; the
    caller stops the feed."""
    index = AnsweredIndex(ttl_s=lookback_s)
    feed = ResultsFeed(bootstrap, results_topic, index.learn, lookback_s=lookback_s)
    feed.start()
    if not feed.caught_up.wait(warmup_s):
        log.warning("results read-back not caught up after %.0fs; starting anyway", warmup_s)
    return index, feed
