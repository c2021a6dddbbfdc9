"""The RAG chatbot: grounded, cited answers over the search layer, and durable conversations."""

from unirank.chat.service import Answerer, ChatService
from unirank.chat.store import ConversationStore
from unirank.chat.types import NOT_COVERED, ChatAnswer, Citation, Passage, Turn

__all__ = ["Answerer", "ChatAnswer", "ChatService", "Citation", "ConversationStore", "NOT_COVERED", "Passage", "Turn"]
