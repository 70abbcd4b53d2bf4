"""The autoscaler daemon: decides *how much* EC2 capacity of which kind exists —
plans, launches, drains and terminates nodes per compute environment, handles Spot
interruptions, and scales to zero."""
