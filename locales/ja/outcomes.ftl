# 各結果のタイトルとメッセージです。locales/en/outcomes.ftl から翻訳しています。

outcome-access_denied-title = 連携をキャンセルしました
outcome-access_denied-message = アクセスが許可されなかったため、何も連携されていません。いつでもやり直していただけます。

outcome-invalid_request-title = 連携を開始できませんでした
outcome-invalid_request-message = 連携先のサービスが要求を受け付けませんでした。アプリに戻って時間をおいてからもう一度お試しいただくか、サポートにお問い合わせください。

outcome-unauthorized_client-title = この連携は現在ご利用いただけません
outcome-unauthorized_client-message = このアプリは現在、このサービスとの連携が許可されていません。サポートにお問い合わせください。

outcome-unsupported_response_type-title = この連携は現在ご利用いただけません
outcome-unsupported_response_type-message = アプリからのアクセスの求め方に、サービスが対応していません。サポートにお問い合わせください。

outcome-invalid_scope-title = この連携は現在ご利用いただけません
outcome-invalid_scope-message = サービスが提供していない種類のアクセスを、アプリが求めました。サポートにお問い合わせください。

outcome-server_error-title = サービスで問題が発生しました
outcome-server_error-message = 連携先のサービスでエラーが発生しました。数分後にもう一度お試しください。

outcome-temporarily_unavailable-title = サービスが混み合っています
outcome-temporarily_unavailable-message = 連携先のサービスが一時的に利用できなくなっています。数分後にもう一度お試しください。

outcome-login_required-title = ログインしてください
outcome-login_required-message = 連携するには、サービスにログインしている必要があります。もう一度お試しいただき、求められたらログインしてください。

outcome-consent_required-title = 承認が必要です
outcome-consent_required-message = サービスへのアクセスを承認していただく必要があります。もう一度お試しいただき、求められたら承認してください。

outcome-interaction_required-title = サービスでの操作が必要です
outcome-interaction_required-message = 連携の前に、サービスでの手続きを済ませていただく必要があります。もう一度お試しいただき、画面の案内に従ってください。

outcome-state_missing-title = 連携の手続き中ではないため、このページを表示できません
outcome-state_missing-message = このアドレスは、連携先のサービスから移動してきたときにだけ開くものです。アプリに戻って、最初からやり直してください。

outcome-state_invalid-title = この連携リンクは無効です
outcome-state_invalid-message = このページを、お客様が開始した連携と結び付けることができませんでした。アプリに戻って、最初からやり直してください。

outcome-session_expired-title = 連携に時間がかかりすぎました
outcome-session_expired-message = 開始から完了までに時間がかかりすぎたため、アカウントの安全のために処理を中止しました。最初からやり直してください。

outcome-browser_mismatch-title = 同じブラウザーで完了してください
outcome-browser_mismatch-message = この連携は別のブラウザーまたはウィンドウで開始されています。アプリに戻り、連携を開始したブラウザーで完了してください。

outcome-flow_already_used-title = この連携はすでに完了しています
outcome-flow_already_used-message = この手順はすでに使用されています。連携を終えたばかりの場合は、これで完了です。そうでない場合は、アプリに戻って最初からやり直してください。

outcome-code_missing-title = サービスから必要な情報が届きませんでした
outcome-code_missing-message = 連携先のサービスから戻ってきましたが、必要な情報が含まれていませんでした。アプリに戻って、もう一度お試しください。

outcome-issuer_mismatch-title = この連携を確認できませんでした
outcome-issuer_mismatch-message = 連携先のサービス以外から応答があったため、処理を中止しました。アプリに戻って、もう一度お試しください。

outcome-id_token_invalid-title = この連携を確認できませんでした
outcome-id_token_invalid-message = 連携先のサービスからの応答を確認できませんでした。時間をおいてからもう一度お試しいただくか、サポートにお問い合わせください。

outcome-failed_to_exchange_token-invalid_grant-title = もう一度連携してください
outcome-failed_to_exchange_token-invalid_grant-message = 連携を完了できませんでした。最初からやり直すと、ほとんどの場合は解決します。

outcome-failed_to_exchange_token-invalid_client-title = この連携は現在ご利用いただけません
outcome-failed_to_exchange_token-invalid_client-message = アプリ側の設定に問題があるため、連携を完了できませんでした。サポートにお問い合わせください。

outcome-failed_to_exchange_token-redirect_uri_mismatch-title = この連携は現在ご利用いただけません
outcome-failed_to_exchange_token-redirect_uri_mismatch-message = アプリ側の設定に問題があるため、連携を完了できませんでした。サポートにお問い合わせください。

outcome-failed_to_exchange_token-timeout-title = サービスから応答がありません
outcome-failed_to_exchange_token-timeout-message = 連携先のサービスからの応答に時間がかかりすぎています。数分後にもう一度お試しください。

outcome-failed_to_exchange_token-provider_unavailable-title = サービスで問題が発生しました
outcome-failed_to_exchange_token-provider_unavailable-message = 連携先のサービスでエラーが発生しました。数分後にもう一度お試しください。

outcome-failed_to_exchange_token-malformed_response-title = サービスから予期しない応答がありました
outcome-failed_to_exchange_token-malformed_response-message = 連携先のサービスから、処理できない内容の応答がありました。時間をおいてからもう一度お試しいただくか、サポートにお問い合わせください。

outcome-failed_to_exchange_token-post_auth_hook-title = こちら側で問題が発生しました
outcome-failed_to_exchange_token-post_auth_hook-message = 連携を保存できませんでした。数分後にもう一度お試しください。

outcome-user_verify_url_not_configured-title = この連携を完了できません
outcome-user_verify_url_not_configured-message = アプリで、連携を確認するための準備がまだ整っていません。サポートにお問い合わせください。

outcome-user_verification_failed-title = この連携がご本人のものか確認できませんでした
outcome-user_verification_failed-message = この連携がお客様ご本人のものであることを確認できなかったため、何も連携されていません。アプリに戻って、もう一度お試しください。

outcome-insufficient_scope-title = 一部の権限が許可されていません
outcome-insufficient_scope-message = この連携には、求められたすべての権限が必要です。もう一度お試しいただき、すべての権限を選択したままにしてください。

outcome-link_expired-title = このリンクは有効期限が切れています
outcome-link_expired-message = 連携リンクは一定の時間しか使えません。アプリに戻って、新しいリンクを取得してください。

outcome-link_used-title = このリンクはすでに使用されています
outcome-link_used-message = このリンクでアカウントはすでに連携されています。リンクは一度しか使えません。もう一度連携する場合は、アプリに戻って新しいリンクを取得してください。

outcome-link_invalid-title = このリンクは無効です
outcome-link_invalid-message = この連携リンクは不完全か、内容が変更されています。アプリに戻って、新しいリンクを取得してください。

outcome-connection_unknown-title = この連携は現在ご利用いただけません
outcome-connection_unknown-message = このアプリでは、このサービスとの連携が設定されていません。サポートにお問い合わせください。

outcome-redirect_uri_mismatch-title = この連携は現在ご利用いただけません
outcome-redirect_uri_mismatch-message = アプリ側の設定に問題があるため、連携を開始できませんでした。サポートにお問い合わせください。

outcome-single_tenant_app-title = この連携は現在ご利用いただけません
outcome-single_tenant_app-message = アプリ側の設定に問題があるため、連携を開始できませんでした。サポートにお問い合わせください。

outcome-application_not_found-title = この連携は現在ご利用いただけません
outcome-application_not_found-message = サービスがこのアプリを認識していません。サポートにお問い合わせください。

outcome-admin_consent_required-title = このアプリには管理者の承認が必要です
outcome-admin_consent_required-message = お客様の組織では、このアプリを連携する前に管理者の承認が必要です。IT管理者に承認を依頼してから、もう一度お試しください。

outcome-user_not_in_tenant-title = このアカウントはここでは使用できません
outcome-user_not_in_tenant-message = ログインしたアカウントは、このアプリの対象となる組織に所属していません。もう一度お試しいただき、職場のアカウントでログインしてください。

outcome-admin_policy_enforced-title = 組織によってこのアプリがブロックされています
outcome-admin_policy_enforced-message = 組織の管理者が、このアプリによるアカウントへのアクセスを許可していません。IT管理者に許可を依頼してください。

outcome-org_internal-title = このアプリは特定の組織専用です
outcome-org_internal-message = このアプリは、アプリを作成した組織のアカウントでのみ使用できます。サポートにお問い合わせください。

outcome-app_not_verified-title = このアプリはまだご利用いただけません
outcome-app_not_verified-message = アプリの審査が完了していないため、サービスによってアクセスがブロックされました。サポートにお問い合わせください。

outcome-workspace_approval_required-title = ワークスペースでこのアプリの承認が必要です
outcome-workspace_approval_required-message = このアプリを連携するには、ワークスペースの管理者による承認が必要です。管理者に依頼してから、もう一度お試しください。

outcome-app_not_distributed-title = このアプリはお使いのワークスペースではご利用いただけません
outcome-app_not_distributed-message = このアプリは、作成されたワークスペースにしかインストールできません。サポートにお問い合わせください。

outcome-application_suspended-title = この連携は現在ご利用いただけません
outcome-application_suspended-message = サービスによって、このアプリの利用が停止されています。サポートにお問い合わせください。

outcome-token_refresh_failed-title = 連携の更新が必要です
outcome-token_refresh_failed-message = 保存されている連携が、サービスに受け付けられませんでした。アプリから、もう一度連携してください。

outcome-token_expired-title = 連携の更新が必要です
outcome-token_expired-message = 保存されている連携の有効期限が切れました。アプリから、もう一度連携してください。

outcome-token_rejected-title = 連携の更新が必要です
outcome-token_rejected-message = 保存されている連携が、サービスに受け付けられなくなりました。アプリから、もう一度連携してください。

outcome-credential_rejected-title = このキーは受け付けられませんでした
outcome-credential_rejected-message = 入力された内容はサービスに受け付けられなかったため、何も保存されていません。内容を確認して、もう一度お試しください。

outcome-credential_check_failed-title = キーを確認できませんでした
outcome-credential_check_failed-message = 連携先のサービスが確認に応答しなかったため、何も保存されていません。数分後にもう一度お試しください。

outcome-unknown_provider_error-title = サービスから問題が報告されました
outcome-unknown_provider_error-message = 連携先のサービスから問題が報告されました。もう一度お試しいただくか、サポートにお問い合わせください。

outcome-internal_error-title = こちら側で問題が発生しました
outcome-internal_error-message = 連携を完了できませんでした。数分後にもう一度お試しください。
