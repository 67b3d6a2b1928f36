import pytest
import yaml

from lab.core import config
from lab.core.errors import ConfigError


def _keys(d, prefix=""):
    for k, v in d.items():
        yield prefix + k
        if isinstance(v, dict):
            yield from _keys(v, prefix + k + ".")


def test_every_invoke_yaml_key_has_a_default():
    # Invoke lets INVOKE_LAB_* override only keys that exist in ns.configure.
    data = yaml.safe_load((config.PROJECT_ROOT / "invoke.yaml").read_text())["lab"]
    assert set(_keys(data)) <= set(_keys(config.DEFAULTS))


def test_invoke_defaults_are_strings_so_bad_env_values_reach_validation():
    d = config.invoke_defaults()
    assert d["port"] == "8000" and d["thresholds"]["gpu_util_pct"] == "80.0"
    assert config.validate(config.merged(d))["port"] == 8000


@pytest.mark.parametrize("path,value,message", [
    (("port",), "abc", "port must be a whole number, got 'abc'"),
    (("port",), "70000", "port must be between 1 and 65535"),
    (("thresholds", "gpu_util_pct"), "150", "threshold gpu_util_pct must be between 0 and 100"),
    (("thresholds", "mem_used_pct"), "x", "thresholds.mem_used_pct must be a number"),
    (("gpu_memory_utilization",), "1.5", "gpu-memory-utilization must be between"),
    (("profile",), "tpu", "profile must be one of"),
    (("monitor", "duration_s"), "0", "monitor duration (s) must be at least 1"),
])
def test_bad_values_are_rejected_with_one_line(path, value, message):
    cfg = config.merged()
    target = cfg
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        config.validate(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_relative_paths_are_under_the_project(tmp_path):
    cfg = config.merged({"logbook_dir": "logbook", "data_dir": str(tmp_path)})
    assert config.db_path(cfg) == config.PROJECT_ROOT / "logbook" / "lab.db"
    assert config.data_dir(cfg) == tmp_path
