"""Dataset importers and generators. Each produces ``QuestionRecord``s; ``store.save_dataset`` writes them
to the workspace in one transaction."""

from db.records import DatasetSpec, QuestionRecord

__all__ = ["DatasetSpec", "QuestionRecord"]
