"""The worlds where the book's experiments happen: each knows its true reward, so results can be checked."""

from dpo_teach.worlds.bandit import BanditWorld

__all__ = ["BanditWorld"]
