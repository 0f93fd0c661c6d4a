"""CooperBench 0.0.29's `TeamHarnessConfig`, for `run(setting="team", team_features=...)`.

The mechanisms themselves belong to cbench's host (its task list, typed requests and scratchpad
are enforced there); this is only the switch board, with CooperBench's names.
"""

from dataclasses import dataclass

_FEATURES = ("task_list", "scratchpad", "mcp", "auto_refresh", "protocol")


@dataclass(frozen=True)
class TeamHarnessConfig:
    """Which of the team setting's five mechanisms are on (all by default)."""

    task_list: bool = True
    scratchpad: bool = True
    mcp: bool = True
    auto_refresh: bool = True
    protocol: bool = True

    @staticmethod
    def with_only(*features: str) -> "TeamHarnessConfig":
        """Only the named mechanisms on (for an ablation)."""
        bad = set(features) - set(_FEATURES)
        if bad:
            raise ValueError(f"unknown feature(s) {sorted(bad)}; expected subset of {sorted(_FEATURES)}")
        return TeamHarnessConfig(**{f: (f in features) for f in _FEATURES})
