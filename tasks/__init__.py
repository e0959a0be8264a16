"""Prefect tasks: tasks/<stage>.py holds the tasks its stage's flow composes, over the ML in models/."""
