from django.db import migrations

from backend.ops.flag_registry import KNOWN_FLAGS


def create(apps, schema_editor):
    FeatureFlag = apps.get_model("ops", "FeatureFlag")
    for key, description in KNOWN_FLAGS.items():
        FeatureFlag.objects.get_or_create(
            key=key, defaults={"description": description, "enabled": True, "rollout_percent": 100}
        )


def remove(apps, schema_editor):
    apps.get_model("ops", "FeatureFlag").objects.filter(key__in=KNOWN_FLAGS).delete()


class Migration(migrations.Migration):
    dependencies = [("ops", "0001_initial")]
    operations = [migrations.RunPython(create, remove)]
