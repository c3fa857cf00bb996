"""The outside systems evidence is read from: GitHub, GitLab, Jenkins and CircleCI over their documented
REST APIs (aiohttp), and ECR through boto3. Each implements a protocol of bot.app.evidence."""
