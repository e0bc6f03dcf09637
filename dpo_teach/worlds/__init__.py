"""The worlds where the book's experiments happen: each knows its true reward, so results can be checked."""

from dpo_teach.worlds.bandit import BanditWorld
from dpo_teach.worlds.base import World
from dpo_teach.worlds.reviews import ReviewsWorld, is_grammatical
from dpo_teach.worlds.sequences import SequenceWorld

__all__ = ["BanditWorld", "ReviewsWorld", "SequenceWorld", "World", "is_grammatical"]
