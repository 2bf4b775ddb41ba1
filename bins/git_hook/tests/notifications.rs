//! Watchers are mailed about pushes: `gitserver`, `git_hook`, `app` and `email_worker` as
//! processes, a capturing SMTP server, real PostgreSQL, NATS and Redis.

mod common;

use std::time::Duration;

use common::{Deployment, User, git, poll};
use platform_git::permissions::{self, Role};
use platform_test_support::{CaptureTls, ServiceProcess, SmtpCapture, workspace_binary};

async fn watch(app: &ServiceProcess, user: &User, repo: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .put(app.url(&format!("/api/repos/{repo}/subscription")))
        .bearer_auth(&user.token)
        .json(&serde_json::json!({ "subscribed": true }))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "watching answered {}", response.status());
    Ok(())
}

fn count_to(capture: &SmtpCapture, user: &User) -> anyhow::Result<usize> {
    Ok(capture.messages_to(&format!("{}@example.com", user.name))?.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_get_one_mail_per_push_and_the_pusher_and_outsiders_none() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let capture = SmtpCapture::start(CaptureTls::StartTls)?;
    let ada = deployment.user("ada", true).await?;
    let bob = deployment.user("bob", true).await?;
    let carol = deployment.user("carol", false).await?;
    let dave = deployment.user("dave", true).await?;
    let repo_id = deployment.repo(&ada, "secret", true).await?;
    {
        let mut conn = deployment.database.get().await?;
        for user in [&bob, &carol, &dave] {
            permissions::set_collaborator(&mut conn, repo_id, user.id, Role::Write).await?;
        }
    }
    let app = deployment.app().await?;
    let gitserver = deployment.gitserver().await?;
    let _hook_worker = deployment.git_hook(&[]).await?;
    let smtp: Vec<(String, String)> = capture.env();
    let smtp: Vec<(&str, String)> =
        smtp.iter().map(|(name, value)| (name.as_str(), value.clone())).collect();
    let _email_worker = deployment.start(&workspace_binary("email_worker"), &smtp).await?;
    for user in [&ada, &bob, &carol, &dave] {
        watch(&app, user, "ada/secret").await?;
    }
    // Dave loses access: his watch stays, but he can no longer read the repository.
    {
        let mut conn = deployment.database.get().await?;
        permissions::remove_collaborator(&mut conn, repo_id, dave.id).await?;
    }

    // Ada pushes: Bob is told; Ada (the pusher), Carol (unverified) and Dave are not.
    let work = deployment.scratch.join("work");
    std::fs::create_dir_all(&work)?;
    git(&work, &["init", "--quiet", "--initial-branch=main"])?;
    std::fs::write(work.join("plan.md"), "step one\n")?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "--quiet", "-m", "Write the plan"])?;
    git(&work, &["push", "--quiet", &deployment.http_url(&gitserver, &ada, "ada/secret"), "main"])?;
    poll(Duration::from_secs(60), "Bob's mail", || {
        let count = count_to(&capture, &bob);
        async move { Ok((count? >= 1).then_some(())) }
    })
    .await?;
    let mail = capture.messages_to("bob@example.com")?.remove(0);
    let text = mail.text.unwrap_or_default();
    assert!(text.contains("ada/secret") && text.contains("Write the plan"), "{text}");

    // Bob pushes: Ada is told, Bob is not.
    std::fs::write(work.join("plan.md"), "step one\nstep two\n")?;
    git(&work, &["commit", "--quiet", "-am", "Add a step"])?;
    git(&work, &["push", "--quiet", &deployment.http_url(&gitserver, &bob, "ada/secret"), "main"])?;
    poll(Duration::from_secs(60), "Ada's mail", || {
        let count = count_to(&capture, &ada);
        async move { Ok((count? >= 1).then_some(())) }
    })
    .await?;
    // Time for a repeat or a stray mail to show, if one were coming.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count_to(&capture, &bob)?, 1, "Bob: one mail for Ada's push, none for his own");
    assert_eq!(count_to(&capture, &ada)?, 1, "Ada: one mail for Bob's push, none for her own");
    assert_eq!(count_to(&capture, &carol)?, 0, "Carol has no verified address");
    assert_eq!(count_to(&capture, &dave)?, 0, "Dave lost access");
    Ok(())
}
