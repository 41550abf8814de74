use super::*;

#[test]
fn cluster_names_are_cloud_safe_and_unique_per_attempt() {
    assert_eq!(cluster_name("train", 7, 1), "train-7-1");
    assert_eq!(cluster_name("Train_Model.v2", 7, 3), "train-model-v2-7-3");
    assert_eq!(
        cluster_name("a-very-long-task-name-that-goes-on", 12, 2),
        "a-very-long-task-name-tha-12-2"
    );
    assert_eq!(cluster_name("___", 1, 1), "task-1-1");
    assert_eq!(attempt_of_cluster("train-model-v2-7-3", 7), Some(3));
    assert_eq!(attempt_of_cluster("train-7-3", 8), None);
    assert_eq!(attempt_of_cluster("train-17-3", 7), None);
    assert_eq!(attempt_of_cluster("7-3", 7), None);
    assert_eq!(attempt_of_cluster("x-7-3a", 7), None);
}

#[test]
fn job_status_is_first_task_not_succeeded() {
    let mut job = JobRecord::test().tasks(3);
    job.tasks[0].status = JobStatus::Succeeded;
    job.tasks[1].status = JobStatus::Running;
    assert_eq!(job.status(), JobStatus::Running);
    job.tasks[1].status = JobStatus::Succeeded;
    job.tasks[2].status = JobStatus::Succeeded;
    assert_eq!(job.status(), JobStatus::Succeeded);
}

#[test]
fn durations_exclude_recovery_and_use_now_while_active() {
    let t = Timestamp::from_secs;
    let mut job = JobRecord::test().submitted(t(100));
    job.tasks[0].run_time = Duration::from_secs(30);
    job.tasks[0].running_since = Some(t(200));
    job.tasks[0].status = JobStatus::Running;
    assert_eq!(job.job_duration(t(210)), Duration::from_secs(40));
    assert_eq!(job.total_duration(t(210)), Duration::from_secs(110));
    assert_eq!(job.ended_at(), None);
}

#[test]
fn task_ids_are_skypilots_shape() {
    let at = Timestamp::from_millis(1_688_678_311_563);
    let job = JobRecord::test().id(1).named("my-job-name").submitted(at);
    assert_eq!(
        job.skypilot_task_id(0),
        "sky-managed-2023-07-06-21-18-31-563000_my-job-name_1-0"
    );
    let pipeline = JobRecord::test()
        .id(8)
        .named("pipeline")
        .tasks(2)
        .submitted(at);
    assert_eq!(
        pipeline.skypilot_task_id(1),
        "sky-managed-2023-07-06-21-18-31-563000_pipeline_pipeline-1_8-1"
    );
}

#[test]
fn records_round_trip_through_json() {
    let job = JobRecord::test().tasks(2).running().attempt(2);
    let json = serde_json::to_string(&job).unwrap();
    let back: JobRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, job);
}
