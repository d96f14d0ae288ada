from django.core.management.base import BaseCommand, CommandError

from backend.exams.calibration import CalibrationRefused, auto_calibrate, calibrate_exam
from backend.ops.locks import LockHeld


class Command(BaseCommand):
    help = "Rasch-calibrate one exam, or (with --auto) every closed exam not yet calibrated."

    def add_arguments(self, parser):
        parser.add_argument("exam_id", nargs="?", type=int)
        parser.add_argument("--auto", action="store_true")
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, **opts):
        try:
            if opts["auto"]:
                report = auto_calibrate()
                self.stdout.write(f"calibrated: {report.calibrated} refused: {report.refused}")
                return
            if opts["exam_id"] is None:
                raise CommandError("give an exam id or --auto")
            s = calibrate_exam(opts["exam_id"], dry_run=opts["dry_run"])
            self.stdout.write(f"exam {s.exam_id}: {s.outcome}, run {s.run_id}")
        except (CalibrationRefused, LockHeld) as exc:
            raise CommandError(str(exc)) from None
