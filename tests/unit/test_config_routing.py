"""The grounded-routing and shadow settings reach the roles that use them, and bad ones are refused."""

import pytest

from pipeline.config import Config
from topics.errors import ConfigError


def test_shadow_judge_and_quality_settings_reach_every_role(tmp_path):
    config = Config.from_env({"POINTSMAN_DATA_DIR": str(tmp_path), "POINTSMAN_SHADOW_RATE": "0.25",
                              "POINTSMAN_JUDGE": "llm", "POINTSMAN_JUDGE_EMBEDDER": "hashing",
                              "POINTSMAN_SHADOW_CONCURRENCY": "3", "POINTSMAN_QUALITY_TARGET": "0.9",
                              "POINTSMAN_LLM_MODEL": "gpt-4.1"})
    router, slm, llm = config.router(), config.slm(), config.llm("http://127.0.0.1:1/v1")
    assert router.shadow_rate == slm.shadow_rate == 0.25
    assert (llm.shadow.judge, llm.shadow.judge_embedder, llm.shadow.concurrency) == ("llm", "hashing", 3)
    assert router.policy_options.quality_target == 0.9
    assert router.policy_options.model_file == str(tmp_path.resolve() / "router.npz")
    assert slm.llm_model == "gpt-4.1"  # the SLM prices its counterfactual as the LLM track


@pytest.mark.parametrize(("name", "value"), [("POINTSMAN_SHADOW_RATE", "1.5"), ("POINTSMAN_JUDGE", "vibes"),
                                             ("POINTSMAN_QUALITY_TARGET", "0")])
def test_a_bad_setting_is_refused_with_its_name(tmp_path, name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({"POINTSMAN_DATA_DIR": str(tmp_path), name: value})
