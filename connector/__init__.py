"""Apache Beam connector for Alibaba Cloud IoT Platform's HTTPS device channel."""
