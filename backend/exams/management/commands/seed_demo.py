from django.core.management.base import BaseCommand

from backend.exams.seed import seed_demo


class Command(BaseCommand):
    help = "Seed demo data: an open exam, closed exams with scored answers, an upcoming exam."

    def add_arguments(self, parser):
        parser.add_argument("--students", type=int, default=300)
        parser.add_argument("--exams", type=int, default=3)
        parser.add_argument("--no-answers", action="store_true")
        parser.add_argument("--seed", type=int, default=20261124)

    def handle(self, *args, **opts):
        report = seed_demo(
            students=opts["students"],
            exams=opts["exams"],
            answers=not opts["no_answers"],
            seed=opts["seed"],
        )
        self.stdout.write(
            f"seeded {report.students} students, {len(report.exams)} exams, "
            f"{report.sessions} sessions, {report.answers} answers in {report.seconds}s"
        )
        self.stdout.write(f"demo student {report.demo_student} token: {report.demo_token}")
