from pathlib import Path

from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.http import JsonResponse

from polls.models import Question

VERSION = (Path(__file__).parents[1] / "VERSION").read_text().strip()


def health(request):
    applied = MigrationRecorder(connection).applied_migrations()
    return JsonResponse({"status": "ok", "version": VERSION, "migrations": len(applied)})


def questions(request):
    return JsonResponse({"questions": list(Question.objects.values("id", "text"))})
