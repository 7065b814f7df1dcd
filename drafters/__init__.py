"""Drafters: model-free guesses of the next tokens, as scored token trees."""
from .base import Drafter, DrafterError, RequestStates
from .tree import DraftTree, TreeBudget, TreeError, TrieBuilder
from .prompt_lookup import PromptLookupDrafter
from .suffix_automaton import SuffixAutomatonDrafter
from .calibration import Calibrated, OnlineCalibrator
from .mixer import MixerDrafter, make_drafter
from .retrieval import CorpusError, RetrievalDrafter, RetrievalStore
from .source_aligned import SourceAlignedDrafter
from .recycling import TokenRecyclingDrafter

__all__ = ["Drafter", "DrafterError", "RequestStates", "DraftTree", "TreeBudget", "TreeError", "TrieBuilder",
           "PromptLookupDrafter", "SuffixAutomatonDrafter",
           "Calibrated", "OnlineCalibrator", "MixerDrafter", "make_drafter",
           "RetrievalDrafter", "RetrievalStore", "SourceAlignedDrafter", "CorpusError",
           "TokenRecyclingDrafter"]
