"""Training on Spark: `equilibra fit --engine spark [--master URL]`.

The same artifact as a local fit, built by Spark jobs where the data is large: reading events
(Parquet, CSV, PostgreSQL over JDBC), validating and cleaning them, summing them into user × item
cells, and training ALS (Spark MLlib) or item-item co-occurrence similarities. Only what the
artifact holds comes back to the driver: the id maps, the cells and the learned factors or
neighbours. pyspark is an extra (`pip install 'equilibra[spark]'`) and needs Java 17+.
"""
