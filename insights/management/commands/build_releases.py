from django.core.management.base import BaseCommand

from insights.releases import release_policy_of_settings, releases_build


class Command(BaseCommand):
    help = (
        "Build the release of every loaded dataset version under the privacy policy the settings"
        " describe (PRIVACY_K, PRIVACY_ROUND_TO, PRIVACY_NOISE_SCALE, PRIVACY_NOISE_SECRET); versions"
        " released under it already are left as they are. Run it after changing the policy."
    )

    def handle(self, *args, **options):
        policy = release_policy_of_settings()
        self.stdout.write(f"release {policy}")

        def built(release) -> None:
            self.stdout.write(
                f"  dataset version {release.dataset_version_id} ({release.dataset_version.kind}):"
                f" {release.released:,} of {release.values:,} values released,"
                f" {release.withheld_below_k:,} under k, {release.withheld_complementary:,} complementary,"
                f" in {release.duration_seconds:.1f} s"
            )

        releases = releases_build(policy=policy, on_release=built)
        self.stdout.write(self.style.SUCCESS(f"{len(releases)} release(s) built"))
