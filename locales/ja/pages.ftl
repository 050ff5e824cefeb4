# 日本語のページ本文です。各結果のタイトルとメッセージは outcomes.ftl にあります。

connected-title = 連携が完了しました
connected-body = { $connection }アカウントが{ $app }に連携されました。このウィンドウは閉じていただいてかまいません。
back-to-app = { $app }に戻る
back-to-app-generic = アプリに戻る
try-again = もう一度試す
contact-support = サポートに問い合わせる
check-status = サービスの稼働状況を確認
reference-label = 参照コード：
actions-label = 次にできること

result-gone-title = このページは表示できなくなりました
result-gone-body = 連携の結果は1日間のみ保存されます。アプリに戻って、連携できているかご確認ください。
result-other-browser-title = このページは別のブラウザーでのみ表示できます
result-other-browser-body = 連携の結果は、連携を行ったブラウザーでのみ表示されます。アプリに戻って、連携できているかご確認ください。
result-verifying-title = 確認中です
result-verifying-body = この連携がお客様ご本人のものであることを、アプリが確認しています。しばらくしてから、このページを再読み込みしてください。
result-pending-title = 連携の処理中です
result-pending-body = 連携はまだ完了していません。しばらくしてから、このページを再読み込みしてください。

not-found-title = ページが見つかりません
not-found-body = このアドレスにはページがありません。
internal-title = こちら側で問題が発生しました
internal-body = 数分後にもう一度お試しください。
uri-too-long-title = アドレスが長すぎます
headers-too-large-title = 送信された情報が多すぎます
payload-too-large-title = 送信されたデータが大きすぎます
refused-body = この操作は受け付けられなかったため、何も処理されていません。アプリに戻って、もう一度お試しください。
rate-limited-title = 試行回数が多すぎます
rate-limited-body = このブラウザーから短時間に何度も連携が試みられました。1分ほど待ってから、アプリに戻ってもう一度お試しください。

credential-title = { $connection } を連携
credential-intro-key = { $app } と連携するには、{ $connection } の API キーを入力してください。
credential-intro-basic = { $app } と連携するには、{ $connection } のユーザー名とパスワードを入力してください。
credential-key-label = API キー
credential-username-label = ユーザー名
credential-password-label = パスワード
credential-submit = 連携する
credential-privacy = 入力内容は { $connection } で確認された後、暗号化して保存されます。再び表示されることはありません。
credential-missing = すべての項目を入力してください。
credential-malformed = 入力内容が正しくないようです。長すぎるか、キーに使えない文字が含まれています。確認して、もう一度お試しください。
form-unreadable-title = このフォームを読み取れませんでした

support-subject = 連携に関する問題（参照コード: { $reference }）
support-body = サポートご担当者様

    { $app }と{ $connection }の連携がうまくいきませんでした。

    参照コード: { $reference }
    連携先: { $connection }
    日時 (UTC): { $time }
