"""Search: the words of each note, indexed by a job that runs after the note's commit.

Creating a note sends :func:`index_note` through :meth:`carboy.scale.jobs.Jobs.enqueue_on_commit`
on the same ``db.session``: the job is sent only once the note's transaction has committed (so
it always finds the row), and dropped if the transaction rolls back. With ``REDIS_URL`` set the
jobs go to RQ on that Redis, and ``carboy --app examples.notes jobs worker`` runs them;
without it they run in the web process right after the commit (``JOBS_INLINE``), so README's
first command needs nothing else. ``GET /api/search?q=`` finds the signed-in user's notes that
contain every word asked for.
"""

from __future__ import annotations

import re
import typing as t

import sqlalchemy as sa

from carboy.scale.jobs import Jobs

from .db import Note, NoteWord, db

if t.TYPE_CHECKING:
    from carboy import Carboy

#: The app's jobs (RQ with ``REDIS_URL``, inline after commit otherwise).
jobs = Jobs()

#: Words are runs of letters and digits, lower-cased, at most this long (longer ones are cut).
WORD_MAX = 64
#: At most this many distinct words of a note are indexed.
WORDS_PER_NOTE = 500

_WORD = re.compile(r"\w+")


def words_of(text: str) -> list[str]:
    """The distinct words of *text*, in the order they first appear."""
    seen: dict[str, None] = {}
    for match in _WORD.finditer(text.lower()):
        seen.setdefault(match.group()[:WORD_MAX], None)
        if len(seen) >= WORDS_PER_NOTE:
            break
    return list(seen)


def index_note(note_id: int) -> int:
    """The job: (re)write the index of note *note_id*; returns how many words it indexed.

    Runs in an app context of its own (a worker's, or inline after the commit), on a session
    of its own. A note deleted in the meantime is skipped.
    """
    note = db.session.get(Note, note_id)
    if note is None:
        return 0
    words = words_of(f"{note.title} {note.body}")
    db.session.execute(sa.delete(NoteWord).where(NoteWord.note_id == note_id))
    db.session.add_all(NoteWord(note_id=note_id, word=word) for word in words)
    db.session.commit()
    return len(words)


def index_after_commit(note_id: int) -> None:
    """Index the note once the current transaction of ``db.session`` commits."""
    jobs.enqueue_on_commit(db.session, index_note, note_id)


def search(owner_id: int, query: str) -> list[Note]:
    """*owner_id*'s notes whose index holds every word of *query* (none for an empty query)."""
    words = words_of(query)
    if not words:
        return []
    matching = (
        sa.select(NoteWord.note_id)
        .where(NoteWord.word.in_(words))
        .group_by(NoteWord.note_id)
        .having(sa.func.count() == len(words))
    )
    statement = (
        sa.select(Note)
        .where(Note.owner_id == owner_id, Note.id.in_(matching))
        .order_by(Note.id.desc())
    )
    return list(db.session.scalars(statement))


def init_app(app: Carboy) -> None:
    """Run the jobs inline unless Redis is configured (``JOBS_INLINE`` may be set either way)."""
    app.config.setdefault("JOBS_INLINE", not app.config.get("REDIS_URL"))
    jobs.init_app(app)
