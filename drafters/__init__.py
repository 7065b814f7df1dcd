"""Drafters: model-free guesses of the next tokens, as scored token trees."""
from .base import Drafter
from .tree import DraftTree, TreeBudget, TreeError, TrieBuilder

__all__ = ["Drafter", "DraftTree", "TreeBudget", "TreeError", "TrieBuilder"]
