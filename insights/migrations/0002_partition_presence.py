from django.db import migrations

# The same columns and key as 0001, as a table partitioned by UTC month. The loader
# creates and attaches one partition per month (insights_presence_pYYYYMM).
PARTITIONED = """
DROP TABLE insights_presence;
CREATE TABLE insights_presence (
    cell_id bigint NOT NULL,
    hour timestamp with time zone NOT NULL,
    age_band smallint NOT NULL CHECK (age_band >= 0),
    gender smallint NOT NULL CHECK (gender >= 0),
    visits integer NOT NULL CHECK (visits >= 0),
    dataset_version_id bigint NOT NULL,
    PRIMARY KEY (cell_id, hour, age_band, gender)
) PARTITION BY RANGE (hour);
"""


class Migration(migrations.Migration):
    dependencies = [("insights", "0001_initial")]

    operations = [migrations.RunSQL(PARTITIONED, migrations.RunSQL.noop)]
